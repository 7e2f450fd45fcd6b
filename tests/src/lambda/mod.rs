//! Lambda mode, for real: the four function binaries run under the Lambda runtime API emulator
//! (`cargo lambda watch`) against DynamoDB and Secrets Manager in moto, and are driven the way
//! API Gateway drives them.
//!
//! - [`AwsSetup`] creates what the CloudFormation template creates: the table, the keyring and
//!   bootstrap admin key secrets (referenced by ARN, like `!Ref`), and an operator secret
//!   `mcpgw/<unique>` for an upstream header.
//! - [`Emulator`] runs one `cargo lambda watch` serving every function of the workspace on a
//!   loopback port. Functions get their environment from `--env-file` (nothing `MCPGW_*` or
//!   `AWS_*` is inherited from the test process). Invoke a function with a raw event at
//!   `POST http://127.0.0.1:PORT/2015-03-31/functions/NAME/invocations` ([`Emulator::invoke`]);
//!   `http://127.0.0.1:PORT/lambda-url/NAME/...` is the emulator's function URL (payload 2.0).
//! - [`FakeApiGateway`] is an HTTP/1.1 server on `127.0.0.1:0` that turns each request into a
//!   REST API (v1 proxy) or HTTP API (payload 2.0) event, routes it like `infra/template.yaml`,
//!   invokes the function and turns the Lambda proxy response back into HTTP. Per integration
//!   it is buffered or response-streaming, like the template's REST API (mcp-proxy streams).
//! - [`LambdaStack`] wires all of it as deployed: a buffered emulator for every function, a
//!   second emulator with `MCPGW_LAMBDA_STREAMING=1` behind the REST API's mcp-proxy routes,
//!   a REST gateway (stage `prod`) and an HTTP API gateway. [`IdpParameters`] are the
//!   template's identity-provider parameters (`MCPGW_IDP_*` on every function), e.g. the
//!   oidc-provider peer as issuer.
//!
//! Processes: the emulator starts each function lazily (on its first invocation) with
//! `cargo run --bin NAME`, in a session of its own, so killing the emulator's process group
//! would leave the functions behind. The emulator stops its functions on SIGTERM, so it runs
//! under a tiny `sh` supervisor whose stdin is a pipe from this process: when the [`Emulator`]
//! is dropped, or this process dies in any way, the pipe closes and the supervisor sends SIGTERM
//! and waits. Drop then waits for the whole process tree to be gone and SIGKILLs what is left.
//!
//! One module per job, each depending only on those listed before it: `process` (the process
//! tree), `functions` (cargo-lambda, building the binaries), `emulator`, `events` (fixtures),
//! `aws` (moto resources, IdP parameters), `routes` (the template's route table),
//! `api_events` (HTTP to events and back), `api_gateway` (the fake gateway's server), `stack`;
//! `template_checks` (tests only) holds them to `infra/template.yaml`.

mod api_events;
mod api_gateway;
mod aws;
mod emulator;
mod events;
mod functions;
mod process;
mod routes;
mod stack;
#[cfg(test)]
mod template_checks;

pub use api_events::*;
pub use api_gateway::*;
pub use aws::*;
pub use emulator::*;
pub use events::*;
pub use functions::*;
pub use process::*;
pub use routes::*;
pub use stack::*;

/// The functions `cargo lambda watch` serves, by crate (= binary) name.
pub const FUNCTIONS: [&str; 4] = ["mcp-proxy", "admin-api", "oauth-callback", "token-refresh"];

/// Stage of the fake REST API, as in the template's default `StageName`.
pub const STAGE: &str = "prod";

/// Account id that moto and the fake gateway use.
const ACCOUNT_ID: &str = "123456789012";
