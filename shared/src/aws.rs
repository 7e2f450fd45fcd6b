//! AWS SDK configuration, loaded once per process and shared by every client.

use aws_config::{BehaviorVersion, SdkConfig};

/// The standard provider chain (Lambda's role credentials, region, `AWS_ENDPOINT_URL`).
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
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
        .build()
}
