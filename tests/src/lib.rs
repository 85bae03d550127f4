//! Test kit shared by the workspace's integration tests: starts real `redis-server` and
//! gateway processes on loopback and cleans them up.

pub mod redis;
