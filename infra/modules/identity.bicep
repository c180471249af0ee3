// The user-assigned managed identity the Function app runs as: storage, Key Vault references,
// telemetry and (auth=managed_identity) Dataverse all use it; its roles are in rbac.bicep.

param name string
param location string
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output name string = identity.name
output id string = identity.id
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
