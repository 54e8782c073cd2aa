//! Where outputs go. `kafka`: the output topics (the processor's producer). Warehouse
//! sinks (files, object storage, PostgreSQL, HTTP) read those topics as their own
//! consumer groups.

pub mod file;
pub mod http;
pub mod kafka;
pub mod postgres;
pub mod s3;
pub mod worker;
