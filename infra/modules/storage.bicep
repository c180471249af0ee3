// Storage account of the Function app: host storage (leases, timers), the deployment package
// container, the job queues and the state tables. Identity-only: no account key is ever used.

@description('Storage account name (3-24 lowercase letters and digits).')
param name string
param location string
param tags object = {}

@description('Blob container the Flex Consumption plan deploys the app package from.')
param deploymentContainerName string

// The queues and tables the app uses. Names must equal the constants in the code
// (tests/test_infra.py holds them against triage/jobs.py, connectors/table_state.py, ...).
// The host creates "<queue>-poison" on first poison; they are declared so alerts and the
// operations queries find them from day one.
var queueNames = [
  'enrich-jobs'
  'enrich-jobs-poison'
  'enrich-backfill'
  'enrich-backfill-poison'
]
var tableNames = [
  'webhookreplay'
  'enrichclaims'
  'enrichshadow'
  'enrichbackfill'
  'enrichbudget'
]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    //checkov:skip=CKV_AZURE_206: LRS on purpose: the account holds transient state (queued jobs, replay keys, claims, checkpoints) that a new deployment re-creates; geo-replication adds cost, not safety
    name: 'Standard_LRS'
  }
  properties: {
    //checkov:skip=CKV_AZURE_35: no VNet in this template: Flex Consumption reaches the account over its public endpoint; access is Entra ID (RBAC) only, shared keys are off
    //checkov:skip=CKV_AZURE_59: same reason as CKV_AZURE_35: public endpoint, identity-only access (allowSharedKeyAccess false)
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in queueNames: {
  parent: queueService
  name: queueName
}]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for tableName in tableNames: {
  parent: tableService
  name: tableName
}]

output name string = storage.name
output id string = storage.id
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
