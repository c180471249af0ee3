// Ticket enrichment on Azure Functions (Flex Consumption): `azd up` deploys this file.
// Structure after Microsoft's Flex Consumption azd quickstart
// (Azure-Samples/functions-quickstart-python-http-azd), with plain resources in local modules
// so that checkov and tests/test_infra.py can read every property. See docs/deploy.md.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; names the resource group and seeds the resource names.')
param environmentName string

@minLength(1)
@description('Azure region for every resource; must offer Flex Consumption.')
@metadata({ azd: { type: 'location' } })
param location string

@description('Resource group name; default rg-<environmentName>.')
param resourceGroupName string = ''

@description('Object id of the person running azd (AZURE_PRINCIPAL_ID): may set secrets in the vault. Empty: nobody.')
param principalId string = ''

@description('Upper bound of Flex Consumption instances (caps the load on the platforms).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory per instance, MB.')
@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048

// ---- ServiceNow (on when serviceNowInstanceUrl is set) ----
@description('https://<instance>.service-now.com; empty: ServiceNow off.')
param serviceNowInstanceUrl string = ''
@description('oauth (client credentials) or basic.')
@allowed(['oauth', 'basic'])
param serviceNowAuth string = 'oauth'
@description('OAuth client id (auth=oauth).')
param serviceNowClientId string = ''
@description('Integration user name (auth=basic).')
param serviceNowUsername string = ''
@secure()
@description('OAuth client secret (auth=oauth). Empty: keep the value in Key Vault.')
param serviceNowClientSecret string
@secure()
@description('Integration user password (auth=basic). Empty: keep the value in Key Vault.')
param serviceNowPassword string
@secure()
@description('HMAC secret shared with the business rule. Empty: keep the value in Key Vault.')
param serviceNowWebhookSecret string

// ---- Dynamics 365 / Dataverse (on when dataverseOrgUrl is set) ----
@description('https://<org>.crm.dynamics.com; empty: Dynamics off.')
param dataverseOrgUrl string = ''
@description('secret, certificate or managed_identity (the app\'s own user-assigned identity).')
@allowed(['secret', 'certificate', 'managed_identity'])
param dataverseAuth string = 'managed_identity'
@description('Entra tenant (GUID or domain) of the app registration (auth=secret|certificate).')
param dataverseTenantId string = ''
@description('Application (client) id of the app registration (auth=secret|certificate).')
param dataverseClientId string = ''
@description('Path of the PEM private key on the instance (auth=certificate).')
param dataverseCertificatePath string = ''
@description('SHA-1 thumbprint of the certificate, 40 hex digits (auth=certificate).')
param dataverseCertificateThumbprint string = ''
@description('MSCRM.BypassBusinessLogicExecution value (CustomAsync, ...); empty: none.')
param dataverseBypassBusinessLogic string = ''
@secure()
@description('Client secret of the app registration (auth=secret). Empty: keep the value in Key Vault.')
param dataverseClientSecret string
@secure()
@description('Password of the PEM private key (auth=certificate). Empty: keep the value in Key Vault.')
param dataverseCertificatePassword string
@secure()
@description('JSON list of accepted webhook keys, current first: ["new"] or ["new","old"]. Empty: keep the value in Key Vault.')
param dataverseWebhookKeys string

// ---- Behaviour ----
@description('Write nothing to tickets; record suggestions in Table Storage (docs/going-live.md).')
param shadowMode bool = true
@description('Compute and log, write nothing.')
param dryRun bool = false
@description('NCRONTAB (six fields, UTC) of the scheduled backfill, e.g. "0 30 2 * * *"; empty: none.')
param backfillSchedule string = ''
@description('ServiceNow admin mapping (path or https URL); empty: the embedded default.')
param mappingPath string = ''
@description('ServiceNow model directory or https URL; empty: none.')
param modelPath string = ''
@description('Dynamics admin mapping; empty: the embedded default.')
param dataverseMappingPath string = ''
@description('Dynamics model directory or https URL; empty: none.')
param dataverseModelPath string = ''

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var functionAppName = '${abbrs.functionApp}enrich-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'
var enableServiceNow = !empty(serviceNowInstanceUrl)
var enableDataverse = !empty(dataverseOrgUrl)

// The secrets this deployment can reference (Key Vault secret names).
var secretNames = [
  'servicenow-client-secret'
  'servicenow-password'
  'servicenow-webhook-secret'
  'dataverse-client-secret'
  'dataverse-certificate-password'
  'dataverse-webhook-keys'
]

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourceGroup}${environmentName}'
  location: location
  tags: tags
}

module identityModule 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.userAssignedIdentity}enrich-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageAccount}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.logAnalytics}${resourceToken}'
    applicationInsightsName: '${abbrs.applicationInsights}${resourceToken}'
    location: location
    tags: tags
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: '${abbrs.keyVault}${resourceToken}'
    location: location
    tags: tags
    secretNames: secretNames
    // A platform that is off gets no secrets written.
    secretValues: {
      'servicenow-client-secret': enableServiceNow ? serviceNowClientSecret : ''
      'servicenow-password': enableServiceNow ? serviceNowPassword : ''
      'servicenow-webhook-secret': enableServiceNow ? serviceNowWebhookSecret : ''
      'dataverse-client-secret': enableDataverse ? dataverseClientSecret : ''
      'dataverse-certificate-password': enableDataverse ? dataverseCertificatePassword : ''
      'dataverse-webhook-keys': enableDataverse ? dataverseWebhookKeys : ''
    }
  }
}

module rbac 'modules/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    appPrincipalId: identityModule.outputs.principalId
    deployerPrincipalId: principalId
  }
}

module functionApp 'modules/function-app.bicep' = {
  name: 'function-app'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.appServicePlan}${resourceToken}'
    location: location
    tags: tags
    identityId: identityModule.outputs.id
    identityClientId: identityModule.outputs.clientId
    storageAccountName: storage.outputs.name
    blobEndpoint: storage.outputs.blobEndpoint
    queueEndpoint: storage.outputs.queueEndpoint
    tableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerName: deploymentContainerName
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    keyVaultUri: keyVault.outputs.uri
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    enableServiceNow: enableServiceNow
    serviceNowInstanceUrl: serviceNowInstanceUrl
    serviceNowAuth: serviceNowAuth
    serviceNowClientId: serviceNowClientId
    serviceNowUsername: serviceNowUsername
    enableDataverse: enableDataverse
    dataverseOrgUrl: dataverseOrgUrl
    dataverseAuth: dataverseAuth
    dataverseTenantId: dataverseTenantId
    dataverseClientId: dataverseClientId
    dataverseCertificatePath: dataverseCertificatePath
    dataverseCertificateThumbprint: dataverseCertificateThumbprint
    dataverseBypassBusinessLogic: dataverseBypassBusinessLogic
    shadowMode: shadowMode
    dryRun: dryRun
    backfillSchedule: backfillSchedule
    mappingPath: mappingPath
    modelPath: modelPath
    dataverseMappingPath: dataverseMappingPath
    dataverseModelPath: dataverseModelPath
  }
  // Key Vault references and the identity-based storage connection resolve at start-up: grant
  // the roles first so the first start does not fail on a missing role.
  dependsOn: [
    rbac
  ]
}

// ---- Outputs (azd stores them in the environment; docs/deploy.md says where each goes) ----
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_NAME string = functionApp.outputs.name
output SERVICE_API_NAME string = functionApp.outputs.name
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
@description('Client id of the app\'s identity: the Dataverse application user for auth=managed_identity.')
output AZURE_FUNCTION_IDENTITY_CLIENT_ID string = identityModule.outputs.clientId
@description('ServiceNow business rule property: the webhook URL.')
output SERVICENOW_WEBHOOK_URL string = 'https://${functionApp.outputs.defaultHostName}/api/servicenow/webhook'
@description('Dataverse webhook (serviceendpoint) URL: `triage dynamics register-webhook --url`.')
output DYNAMICS_WEBHOOK_URL string = 'https://${functionApp.outputs.defaultHostName}/api/dynamics/webhook'
