//! The greeter demo's service: generated code and a replica implementation that can be told
//! to answer UNAVAILABLE for a while.

use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};

/// Generated from `proto/greeter.proto`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("greeter.v1");
}

use pb::greeter_server::Greeter;
use pb::{HelloReply, HelloRequest};

/// One replica of the greeter.
#[derive(Debug)]
pub struct Replica {
    name: String,
    started: Instant,
    unavailable: Option<(Duration, Duration)>,
}

impl Replica {
    /// A replica named `name`; it answers UNAVAILABLE between the two offsets after start.
    pub fn new(name: String, unavailable: Option<(Duration, Duration)>) -> Self {
        Replica { name, started: Instant::now(), unavailable }
    }
}

#[tonic::async_trait]
impl Greeter for Replica {
    async fn say_hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        if let Some((from, until)) = self.unavailable {
            let elapsed = self.started.elapsed();
            if elapsed >= from && elapsed < until {
                return Err(Status::unavailable(format!("{} is unavailable", self.name)));
            }
        }
        let message = format!("hello, {}", request.into_inner().name);
        Ok(Response::new(HelloReply { message, replica: self.name.clone() }))
    }
}
