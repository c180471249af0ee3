// Key Vault holding the platform credentials and webhook secrets. RBAC authorization only (no
// access policies), soft delete and purge protection on. A secret is written only when its
// value is given: an empty value leaves whatever an operator set in the vault untouched (see
// docs/deploy.md, "Secrets"), so a later `azd provision` never blanks a rotated secret.

param name string
param location string
param tags object = {}

@description('Secrets to write: name -> value. Entries with an empty value are skipped.')
@secure()
param secretValues object

@description('Names of the secrets the app settings reference (the vault may hold them already).')
param secretNames array

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    //checkov:skip=CKV_AZURE_109: no VNet in this template: Flex Consumption resolves Key Vault references over the public endpoint; access is RBAC only (the app's identity holds Key Vault Secrets User)
    //checkov:skip=CKV_AZURE_189: same reason as CKV_AZURE_109
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForTemplateDeployment: false
    enabledForDiskEncryption: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource secrets 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = [for secretName in secretNames: if (!empty(secretValues[secretName])) {
  //checkov:skip=CKV_AZURE_41: no expiry on purpose: an expired secret can no longer be read and the app would stop; expiry lives with the credential itself (ServiceNow OAuth client, Entra client secret), rotation is in docs/secrets.md
  parent: vault
  name: secretName
  properties: {
    value: secretValues[secretName]
    contentType: secretName == 'dataverse-webhook-keys' ? 'application/json' : 'text/plain'
  }
}]

output name string = vault.name
output id string = vault.id
output uri string = vault.properties.vaultUri
