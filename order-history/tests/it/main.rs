mod api;
mod helpers;
mod replicas;
mod retention;
