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
@description('During a webhook secret rotation: also accept the previous secret (Key Vault servicenow-webhook-previous-secret, set by hand; docs/secrets.md).')
param serviceNowWebhookRotating bool = false

// ---- Dynamics 365 / Dataverse (on when dataverseOrgUrl is set) ----
@description('https://<org>.crm.dynamics.com; empty: Dynamics off.')
param dataverseOrgUrl string = ''
@description('managed_identity (the app\'s identity is the application user), federated (an app registration trusting the app\'s identity), secret or certificate (Key Vault certificate dataverse-certificate).')
@allowed(['secret', 'certificate', 'federated', 'managed_identity'])
param dataverseAuth string = 'managed_identity'
@description('Entra tenant (GUID or domain) of the app registration (auth=secret|certificate|federated).')
param dataverseTenantId string = ''
@description('Application (client) id of the app registration (auth=secret|certificate|federated).')
param dataverseClientId string = ''
@description('MSCRM.BypassBusinessLogicExecution value (CustomAsync, ...); empty: none.')
param dataverseBypassBusinessLogic string = ''
@secure()
@description('Client secret of the app registration (auth=secret). Empty: keep the value in Key Vault.')
param dataverseClientSecret string
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
  'servicenow-webhook-previous-secret'
  'dataverse-client-secret'
  'dataverse-certificate'
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
    // A platform that is off gets no secrets written. The previous webhook secret and the
    // Dataverse certificate are never written here: an operator sets the first during a
    // rotation, and creates or imports the second as a Key Vault certificate (its secret has
    // the certificate's name); docs/secrets.md.
    secretValues: {
      'servicenow-client-secret': enableServiceNow ? serviceNowClientSecret : ''
      'servicenow-password': enableServiceNow ? serviceNowPassword : ''
      'servicenow-webhook-secret': enableServiceNow ? serviceNowWebhookSecret : ''
      'servicenow-webhook-previous-secret': ''
      'dataverse-client-secret': enableDataverse ? dataverseClientSecret : ''
      'dataverse-certificate': ''
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
    serviceNowWebhookRotating: serviceNowWebhookRotating
    enableDataverse: enableDataverse
    dataverseOrgUrl: dataverseOrgUrl
    dataverseAuth: dataverseAuth
    dataverseTenantId: dataverseTenantId
    dataverseClientId: dataverseClientId
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
@description('Object (principal) id of the app\'s identity: the subject of the app registration\'s federated credential for auth=federated.')
output AZURE_FUNCTION_IDENTITY_PRINCIPAL_ID string = identityModule.outputs.principalId
@description('ServiceNow business rule property: the webhook URL.')
output SERVICENOW_WEBHOOK_URL string = 'https://${functionApp.outputs.defaultHostName}/api/servicenow/webhook'
@description('Dataverse webhook (serviceendpoint) URL: `triage dynamics register-webhook --url`.')
output DYNAMICS_WEBHOOK_URL string = 'https://${functionApp.outputs.defaultHostName}/api/dynamics/webhook'
