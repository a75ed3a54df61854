mod config;
mod health;
mod helpers;
mod history;
mod jobs;
mod restart;
mod security;
mod streams;
