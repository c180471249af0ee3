// The Function app on the Flex Consumption plan (FC1), running as a user-assigned managed
// identity, with its app settings. Secret-carrying settings are Key Vault references resolved
// with that identity (keyVaultReferenceIdentity); storage is reached with the identity too.
//
// Setting names follow domain/settings.py (prefix ENRICH_, nested delimiter "__").
// FUNCTIONS_WORKER_RUNTIME, FUNCTIONS_EXTENSION_VERSION, WEBSITE_RUN_FROM_PACKAGE and the
// WEBSITE_CONTENT* settings are not used on Flex Consumption: the runtime and its version come
// from functionAppConfig.runtime, the package from functionAppConfig.deployment.

param name string
param planName string
param location string
param tags object = {}

@description('Resource id of the user-assigned managed identity the app runs as.')
param identityId string
@description('Client id of that identity.')
param identityClientId string

param storageAccountName string
param blobEndpoint string
param queueEndpoint string
param tableEndpoint string
param deploymentContainerName string
param applicationInsightsConnectionString string
@description('Key Vault URI, with its trailing slash (https://<vault>.vault.azure.net/).')
param keyVaultUri string

@allowed(['3.11'])
param pythonVersion string = '3.11'
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40
@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048

param enableServiceNow bool
param serviceNowInstanceUrl string
@allowed(['oauth', 'basic'])
param serviceNowAuth string
param serviceNowClientId string
param serviceNowUsername string
@description('Also accept the previous webhook secret (a rotation in progress).')
param serviceNowWebhookRotating bool = false

param enableDataverse bool
param dataverseOrgUrl string
@allowed(['secret', 'certificate', 'federated', 'managed_identity'])
param dataverseAuth string
param dataverseTenantId string
param dataverseClientId string
param dataverseBypassBusinessLogic string

param shadowMode bool
param dryRun bool
param backfillSchedule string
param mappingPath string
param modelPath string
param dataverseMappingPath string
param dataverseModelPath string

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    //checkov:skip=CKV_AZURE_225: zone redundancy is opt-in on Flex Consumption and only in some regions; a lost zone delays jobs (they wait in the queue), it loses none
    reserved: true
  }
}

// Host storage through the identity: no connection string, no account key.
var hostSettings = {
  AzureWebJobsStorage__accountName: storageAccountName
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: blobEndpoint
  AzureWebJobsStorage__queueServiceUri: queueEndpoint
  AzureWebJobsStorage__tableServiceUri: tableEndpoint
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
}

var behaviourSettings = {
  ENRICH_SHADOW_MODE: string(shadowMode)
  ENRICH_DRY_RUN: string(dryRun)
  // NCRONTAB (six fields, UTC); empty: no scheduled backfill.
  ENRICH_BACKFILL__SCHEDULE: backfillSchedule
}

// Optional paths: set only when given, so the embedded defaults apply otherwise.
var pathSettings = union(
  empty(mappingPath) ? {} : { ENRICH_MAPPING_PATH: mappingPath },
  empty(modelPath) ? {} : { ENRICH_MODEL_PATH: modelPath },
  empty(dataverseMappingPath) ? {} : { ENRICH_DATAVERSE_MAPPING_PATH: dataverseMappingPath },
  empty(dataverseModelPath) ? {} : { ENRICH_DATAVERSE_MODEL_PATH: dataverseModelPath }
)

var serviceNowCommon = {
  ENRICH_SERVICENOW__INSTANCE_URL: serviceNowInstanceUrl
  ENRICH_SERVICENOW__AUTH: serviceNowAuth
  ENRICH_WEBHOOK__SECRET: '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/servicenow-webhook-secret/)'
}
// Only while a rotation is in progress: the reference must resolve (the app refuses an
// unresolved one), so it is set only when the operator has put the old secret in the vault.
var serviceNowRotation = serviceNowWebhookRotating ? {
  ENRICH_WEBHOOK__PREVIOUS_SECRET: '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/servicenow-webhook-previous-secret/)'
} : {}

// One entry per ENRICH_SERVICENOW__AUTH value (ServiceNowSettings.auth).
var serviceNowAuthSettings = {
  oauth: {
    ENRICH_SERVICENOW__CLIENT_ID: serviceNowClientId
    ENRICH_SERVICENOW__CLIENT_SECRET: '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/servicenow-client-secret/)'
  }
  basic: {
    ENRICH_SERVICENOW__USERNAME: serviceNowUsername
    ENRICH_SERVICENOW__PASSWORD: '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/servicenow-password/)'
  }
}

var dataverseCommon = {
  ENRICH_DATAVERSE__ORG_URL: dataverseOrgUrl
  ENRICH_DATAVERSE__AUTH: dataverseAuth
  ENRICH_DATAVERSE_WEBHOOK__KEYS: '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/dataverse-webhook-keys/)'
}
var dataverseOptional = empty(dataverseBypassBusinessLogic) ? {} : { ENRICH_DATAVERSE__BYPASS_BUSINESS_LOGIC: dataverseBypassBusinessLogic }

// One entry per ENRICH_DATAVERSE__AUTH value (DataverseSettings.auth).
var dataverseAuthSettings = {
  secret: {
    ENRICH_DATAVERSE__TENANT_ID: dataverseTenantId
    ENRICH_DATAVERSE__CLIENT_ID: dataverseClientId
    ENRICH_DATAVERSE__CLIENT_SECRET: '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/dataverse-client-secret/)'
  }
  certificate: {
    // The Key Vault certificate's secret (PEM or base64 PFX with the key); the thumbprint comes
    // from the certificate itself, so a renewed version needs no setting change.
    ENRICH_DATAVERSE__TENANT_ID: dataverseTenantId
    ENRICH_DATAVERSE__CLIENT_ID: dataverseClientId
    ENRICH_DATAVERSE__CERTIFICATE_PEM: '@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/dataverse-certificate/)'
  }
  federated: {
    // The app registration's federated credential trusts this identity: no secret at all.
    ENRICH_DATAVERSE__TENANT_ID: dataverseTenantId
    ENRICH_DATAVERSE__CLIENT_ID: dataverseClientId
    ENRICH_DATAVERSE__MANAGED_IDENTITY_CLIENT_ID: identityClientId
  }
  managed_identity: {
    // The app's own user-assigned identity, registered as an application user in Dataverse.
    ENRICH_DATAVERSE__MANAGED_IDENTITY_CLIENT_ID: identityClientId
  }
}

var serviceNowSettings = enableServiceNow ? union(serviceNowCommon, serviceNowRotation, serviceNowAuthSettings[serviceNowAuth]) : {}
var dataverseSettings = enableDataverse ? union(dataverseCommon, dataverseOptional, dataverseAuthSettings[dataverseAuth]) : {}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    //checkov:skip=CKV_AZURE_222: the webhooks must be reachable from ServiceNow and Dataverse, which call from the internet; every route authenticates (HMAC signature, webhook key or function key)
    //checkov:skip=CKV_AZURE_17: ServiceNow and Dataverse webhooks cannot present client certificates
    //checkov:skip=CKV_AZURE_212: Flex Consumption scales per function from zero; there is no instance count to set on the plan
    //checkov:skip=CKV_AZURE_213: no platform health check on Flex Consumption; GET /api/health (issue 11) is probed by an availability test instead
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    keyVaultReferenceIdentity: identityId
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
  }
}

// checkov reads every Microsoft.Web/sites/config as the "web" config; this one is "appsettings"
// (name/value pairs only), where the properties those checks look for do not exist.
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  //checkov:skip=CKV_AZURE_13: not the web config (see above); App Service authentication would also refuse the platforms' webhook calls, which carry an HMAC signature or a key instead of an Entra token
  //checkov:skip=CKV_AZURE_63: not the web config (see above); requests are logged to Application Insights
  //checkov:skip=CKV_AZURE_65: not the web config (see above); detailed error pages would echo input, which the app never does
  //checkov:skip=CKV_AZURE_66: not the web config (see above); failed requests are traced in Application Insights
  //checkov:skip=CKV_AZURE_80: not the web config (see above); a Python app, no .NET Framework
  //checkov:skip=CKV_AZURE_88: not the web config (see above); Flex Consumption runs from its deployment container, no Azure Files share
  //checkov:skip=CKV_AZURE_222: not the web config (see above); public access is set on the site (see its suppression)
  parent: site
  name: 'appsettings'
  properties: union(hostSettings, behaviourSettings, pathSettings, serviceNowSettings, dataverseSettings)
}

// No FTP or basic-auth publishing: azd deploys with Entra ID.
resource ftpPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
