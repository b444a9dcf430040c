-- The client an order belongs to, read from its qualified id
-- (`<client>/<id>`; a bare id is the client `default`'s, as every order from
-- before client keys is).
ALTER TABLE orders
    ADD COLUMN client text NOT NULL
    GENERATED ALWAYS AS (
        CASE WHEN strpos(id, '/') > 0 THEN split_part(id, '/', 1) ELSE 'default' END
    ) STORED;

CREATE INDEX orders_client_first_offset ON orders (client, first_offset DESC);
