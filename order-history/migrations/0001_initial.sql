-- The order history: one row per order (its current status, forward only),
-- one row per event (unique event id: a redelivered event is a no-op), and
-- the stream offset the history has applied up to.

CREATE TABLE orders (
    id             text PRIMARY KEY,
    sku            text NOT NULL,
    qty            integer NOT NULL,
    status         text NOT NULL,
    status_rank    smallint NOT NULL,
    reason         text,
    -- stage (accepted, parked, reserved, rejected, notified) -> ms since the epoch
    timestamps     jsonb NOT NULL DEFAULT '{}',
    placed_at      timestamptz NOT NULL,
    -- the stream offset of the order's first event: newest first = highest
    first_offset   bigint NOT NULL,
    updated_offset bigint NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_newest ON orders (first_offset DESC);
CREATE INDEX orders_by_status ON orders (status, first_offset DESC);
CREATE INDEX orders_by_sku ON orders (sku, first_offset DESC);
CREATE INDEX orders_by_placed_at ON orders (placed_at);

CREATE TABLE events (
    event_id      text PRIMARY KEY,
    order_id      text NOT NULL,
    kind          text NOT NULL,
    stream_offset bigint NOT NULL,
    at_ms         bigint NOT NULL,
    reason        text,
    trace_id      text,
    body          jsonb NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_by_order ON events (order_id, stream_offset);

-- Messages on the stream that are no order event (kept, never dropped silently).
CREATE TABLE unreadable_events (
    stream_offset bigint PRIMARY KEY,
    routing_key   text NOT NULL,
    message_id    text,
    body          text NOT NULL,
    error         text NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE checkpoint (
    stream        text PRIMARY KEY,
    stream_offset bigint NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
