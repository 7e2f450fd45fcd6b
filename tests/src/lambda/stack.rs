//! [`LambdaStack`]: a whole deployment emulated, wired as the template wires it.

use std::path::Path;

use anyhow::Result;

use super::api_gateway::{BoundGateway, FakeApiGateway};
use super::aws::{AwsSetup, IdpParameters};
use super::emulator::Emulator;
use super::routes::{ApiKind, Integration, Transfer};
use super::{FUNCTIONS, STAGE};

/// Everything of a deployment, emulated: AWS resources in moto, the functions under two
/// emulators (buffered, and response-streaming for the REST API's mcp-proxy integrations),
/// a REST API (stage `prod`) and an HTTP API.
pub struct LambdaStack {
    pub aws: AwsSetup,
    /// Every function, buffered (`lambda_http::run`).
    pub buffered: Emulator,
    /// Every function with `MCPGW_LAMBDA_STREAMING=1`; only mcp-proxy is used, as in the
    /// template where only mcp-proxy's REST integrations stream.
    pub streaming: Emulator,
    /// REST API as in the template: mcp-proxy STREAM, the others BUFFERED. `MCPGW_PUBLIC_URL`
    /// is its base URL.
    pub rest: FakeApiGateway,
    /// HTTP API (payload 2.0), all BUFFERED.
    pub http: FakeApiGateway,
    /// The template's identity-provider parameters the functions run with.
    pub idp: IdpParameters,
}

impl LambdaStack {
    /// Deploys, with `idp` as the template's identity-provider parameters.
    pub async fn start(
        cargo_lambda: &Path,
        moto: &str,
        upstream_secret: &str,
        idp: IdpParameters,
    ) -> Result<Self> {
        let aws = AwsSetup::create(moto, upstream_secret).await?;
        let rest = BoundGateway::bind(ApiKind::Rest {
            stage: STAGE.into(),
        })
        .await?;
        let http = BoundGateway::bind(ApiKind::Http).await?;
        let env = aws.function_env(rest.base(), &idp);
        let mut streaming_env = env.clone();
        streaming_env.push(("MCPGW_LAMBDA_STREAMING".into(), "1".into()));
        let (buffered, streaming) = tokio::try_join!(
            Emulator::start(cargo_lambda, &env),
            Emulator::start(cargo_lambda, &streaming_env)
        )?;
        let rest = rest.serve(
            FUNCTIONS
                .iter()
                .map(|&f| {
                    let i = if f == "mcp-proxy" {
                        Integration::new(&streaming, Transfer::Stream)
                    } else {
                        Integration::new(&buffered, Transfer::Buffered)
                    };
                    (f, i)
                })
                .collect(),
        )?;
        let http = http.serve(
            FUNCTIONS
                .iter()
                .map(|&f| (f, Integration::new(&buffered, Transfer::Buffered)))
                .collect(),
        )?;
        Ok(Self {
            aws,
            buffered,
            streaming,
            rest,
            http,
            idp,
        })
    }

    /// Every function's environment (the buffered emulator's: no `MCPGW_LAMBDA_STREAMING`).
    pub fn function_env(&self) -> Vec<(String, String)> {
        self.aws.function_env(&self.rest.base, &self.idp)
    }

    /// Every process the stack started (supervisors, emulators, functions).
    pub fn process_ids(&self) -> Vec<u32> {
        let mut ids = self.buffered.process_ids();
        ids.extend(self.streaming.process_ids());
        ids
    }
}
