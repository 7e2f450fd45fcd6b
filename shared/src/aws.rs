//! AWS SDK configuration, loaded once per process and shared by every client.

use aws_config::{BehaviorVersion, SdkConfig};

/// The standard provider chain (Lambda's role credentials, region, `AWS_ENDPOINT_URL`).
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(sdk_timeouts())
        .load()
        .await
}

/// Bounds on every DynamoDB and Secrets Manager call. The SDK's default is a connect timeout
/// only, so a hung call would hold the request (and, for a secret, everyone waiting on its
/// single-flight slot) until the Lambda timeout. A small item read answers in milliseconds.
fn sdk_timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(2))
        .operation_attempt_timeout(std::time::Duration::from_secs(3))
        .operation_timeout(std::time::Duration::from_secs(8))
        .build()
}

/// A config pointed at an explicit endpoint with static dummy credentials: for moto in
/// tests and for local mode against an emulator.
pub fn emulator_sdk_config(endpoint: &str) -> SdkConfig {
    let creds = aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "emulator");
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
            creds,
        ))
        .timeout_config(sdk_timeouts())
        .build()
}
