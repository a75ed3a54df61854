mod config;
mod health;
mod helpers;
mod history;
mod jobs;
mod restart;
mod security;
#[path = "../support/server.rs"]
mod server;
