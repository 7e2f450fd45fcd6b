//! What `infra/template.yaml` creates in AWS, created in moto: the table and the secrets
//! ([`AwsSetup`]), and the template's identity-provider parameters ([`IdpParameters`]).

use anyhow::{Context, Result};
use serde_json::json;

/// The AWS resources the template creates, in moto.
#[derive(Debug, Clone)]
pub struct AwsSetup {
    pub endpoint: String,
    pub table: String,
    /// `secret://<ARN>` of the keyring document.
    pub keyring_ref: String,
    /// `secret://<ARN>` of the bootstrap admin key.
    pub admin_key_ref: String,
    /// The bootstrap admin key itself.
    pub admin_key: String,
    /// `secret://mcpgw/<unique>`: an operator secret holding an upstream header value.
    pub upstream_secret_ref: String,
    /// The keyring document itself (to seal test records as the functions do).
    pub keyring_document: String,
}

impl AwsSetup {
    /// Creates a fresh table and secrets in moto at `endpoint`; the upstream secret holds
    /// `upstream_secret`.
    pub async fn create(endpoint: &str, upstream_secret: &str) -> Result<Self> {
        mcpgw::crypto::install_tls_provider();
        let sdk = mcpgw::aws::emulator_sdk_config(endpoint);
        let table = mcpgw::testing::unique_name("mcpgw-lambda");
        mcpgw::store::dynamo::create_table(&aws_sdk_dynamodb::Client::new(&sdk), &table)
            .await
            .context("creating the DynamoDB table in moto")?;
        let sm = aws_sdk_secretsmanager::Client::new(&sdk);
        // 30 random bytes are 40 base64url characters.
        let keyring = json!({"active": "k1", "k1": mcpgw::crypto::random_token(30)}).to_string();
        let keyring_arn = create_secret(
            &sm,
            &mcpgw::testing::unique_name("mcpgw-lambda-keyring"),
            &keyring,
        )
        .await?;
        let admin_key = mcpgw::crypto::random_token(36);
        let admin_arn = create_secret(
            &sm,
            &mcpgw::testing::unique_name("mcpgw-lambda-admin"),
            &admin_key,
        )
        .await?;
        let upstream_name = format!("mcpgw/{}", mcpgw::testing::unique_name("lambda-echo"));
        create_secret(&sm, &upstream_name, upstream_secret).await?;
        Ok(Self {
            endpoint: endpoint.to_owned(),
            table,
            keyring_ref: format!("secret://{keyring_arn}"),
            admin_key_ref: format!("secret://{admin_arn}"),
            admin_key,
            upstream_secret_ref: format!("secret://{upstream_name}"),
            keyring_document: keyring,
        })
    }

    /// A new operator secret (`mcpgw/<unique>`) holding `value`; returns its reference.
    pub async fn operator_secret(&self, value: &str) -> Result<String> {
        let sm =
            aws_sdk_secretsmanager::Client::new(&mcpgw::aws::emulator_sdk_config(&self.endpoint));
        let name = format!("mcpgw/{}", mcpgw::testing::unique_name("lambda-secret"));
        create_secret(&sm, &name, value).await?;
        Ok(format!("secret://{name}"))
    }

    /// The functions' store: the moto table, through the DynamoDB adapter.
    pub fn store(&self) -> mcpgw::store::dynamo::DynamoStore {
        let client =
            aws_sdk_dynamodb::Client::new(&mcpgw::aws::emulator_sdk_config(&self.endpoint));
        mcpgw::store::dynamo::DynamoStore::new(client, self.table.clone())
    }

    /// The environment of every function, as `infra/template.yaml` sets it (plus moto's
    /// endpoint and dummy credentials instead of the execution role), with `idp` as its
    /// identity-provider parameters.
    pub fn function_env(&self, public_url: &str, idp: &IdpParameters) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("MCPGW_STORE", "dynamodb"),
            ("MCPGW_SECRETS", "aws"),
            ("MCPGW_TABLE_NAME", self.table.as_str()),
            ("MCPGW_KEYRING_SECRET", self.keyring_ref.as_str()),
            (
                "MCPGW_BOOTSTRAP_ADMIN_KEY_SECRET",
                self.admin_key_ref.as_str(),
            ),
            ("MCPGW_PUBLIC_URL", public_url),
            // The template's EgressAllow parameter, as a stack whose peers all live on
            // loopback must set it: in Lambda loopback is denied by default.
            ("MCPGW_EGRESS_DENY", ""),
            ("MCPGW_EGRESS_ALLOW", "127.0.0.0/8,::1"),
            // Not a template parameter (a deployment's OAuth endpoints are https): the peers
            // here (oidc-provider, the Python servers) speak plain http on loopback.
            ("MCPGW_EGRESS_ALLOW_HTTP", "1"),
            // REST events carry the stage in requestContext; without this lambda_http prefixes
            // every path with "/<stage>" and no route matches (see `stage_prefix` in the tests).
            ("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH", "true"),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("RUST_LOG", "info"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.extend(idp.env());
        env
    }
}

/// The template's identity-provider parameters (`IdpIssuer`, ...). The template passes every
/// one of them to every function as `MCPGW_IDP_*`, empty ones included (an empty variable is
/// unset to the functions), so [`Default`] is a stack without an identity provider: the
/// template's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdpParameters {
    pub issuer: String,
    pub audiences: String,
    pub email_claim: String,
    pub groups_claim: String,
    pub admin_groups: String,
    pub required_scopes: String,
    pub scopes: String,
    pub allowed_client_ids: String,
}

impl Default for IdpParameters {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            audiences: String::new(),
            email_claim: "email".into(),
            groups_claim: "groups".into(),
            admin_groups: String::new(),
            required_scopes: String::new(),
            scopes: String::new(),
            allowed_client_ids: String::new(),
        }
    }
}

impl IdpParameters {
    /// (template parameter, the variable the template sets from it, value).
    pub fn parameters(&self) -> [(&'static str, &'static str, &str); 8] {
        [
            ("IdpIssuer", "MCPGW_IDP_ISSUER", &self.issuer),
            ("IdpAudiences", "MCPGW_IDP_AUDIENCES", &self.audiences),
            ("IdpEmailClaim", "MCPGW_IDP_EMAIL_CLAIM", &self.email_claim),
            (
                "IdpGroupsClaim",
                "MCPGW_IDP_GROUPS_CLAIM",
                &self.groups_claim,
            ),
            (
                "IdpAdminGroups",
                "MCPGW_IDP_ADMIN_GROUPS",
                &self.admin_groups,
            ),
            (
                "IdpRequiredScopes",
                "MCPGW_IDP_REQUIRED_SCOPES",
                &self.required_scopes,
            ),
            ("IdpScopes", "MCPGW_IDP_SCOPES", &self.scopes),
            (
                "IdpAllowedClientIds",
                "MCPGW_IDP_ALLOWED_CLIENT_IDS",
                &self.allowed_client_ids,
            ),
        ]
    }

    /// The `MCPGW_IDP_*` variables, as the template sets them.
    pub fn env(&self) -> Vec<(String, String)> {
        self.parameters()
            .into_iter()
            .map(|(_, var, value)| (var.to_owned(), value.to_owned()))
            .collect()
    }
}

async fn create_secret(
    sm: &aws_sdk_secretsmanager::Client,
    name: &str,
    value: &str,
) -> Result<String> {
    let out = sm
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .with_context(|| format!("creating secret {name} in moto"))?;
    out.arn.context("moto returned no ARN")
}
