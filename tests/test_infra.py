"""infra/ (Bicep) held against the code: names, settings, secrets, storage, roles, outputs.

Each check returns the problems it finds; the real templates must have none, and a copy of the
Bicep broken on purpose (``_broken``) must make each check fail. checkov runs separately
(``make infra-check``); these tests need only the main venv.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
from pathlib import Path
from typing import get_args

import pytest

from connectors.backfill_state import BACKFILL_TABLE
from connectors.shadow import SHADOW_TABLE
from connectors.table_state import CLAIMS_TABLE, REPLAY_TABLE
from domain.errors import ConfigError
from domain.settings import DataverseSettings, ServiceNowSettings, load_settings
from tests.infra_bicep import BicepFile, Expr, body, get, load_texts, parse_all, walk
from triage.jobs import JOBS_QUEUE

ROOT = Path(__file__).resolve().parent.parent
MAIN, FUNC, STORAGE = "main.bicep", "modules/function-app.bicep", "modules/storage.bicep"
KEYVAULT, RBAC = "modules/keyvault.bicep", "modules/rbac.bicep"
KV_REF = re.compile(r"^@Microsoft\.KeyVault\(SecretUri=\$\{keyVaultUri\}secrets/([a-z0-9-]+)/\)$")
SECRET_NAME = re.compile(r"SECRET|PASSWORD|KEYS?$|TOKEN|PEM", re.IGNORECASE)
# Built-in role definition ids.
ALLOWED_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
}
FORBIDDEN_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7358fae12": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
    "00482a5a-887f-4fb3-b363-3b7fe8e74483": "Key Vault Administrator",
    "17d1049b-9a84-46fb-8f53-869881c3d3ab": "Storage Account Contributor",
}
# Not used on Flex Consumption (runtime and package come from functionAppConfig).
FLEX_UNSUPPORTED = {
    "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "WEBSITE_CONTENTSHARE", "AzureWebJobsStorage",
    "SCM_DO_BUILD_DURING_DEPLOYMENT", "WEBSITE_NODE_DEFAULT_VERSION",
}  # fmt: skip
# Sample values for the function-app module's parameters, to evaluate its settings.
SAMPLE_PARAMS = {
    "serviceNowInstanceUrl": "https://dev1.service-now.com",
    "serviceNowClientId": "sn-client",
    "serviceNowUsername": "svc.enrich",
    "dataverseOrgUrl": "https://org1.crm4.dynamics.com",
    "dataverseTenantId": "contoso.onmicrosoft.com",
    "dataverseClientId": "11111111-2222-3333-4444-555555555555",
    "dataverseCertificatePath": "/mounts/certs/dataverse.pem",
    "dataverseCertificateThumbprint": "a" * 40,
    "identityClientId": "99999999-8888-7777-6666-555555555555",
    "shadowMode": "true",
    "dryRun": "false",
    "backfillSchedule": "0 30 2 * * *",
}
# What App Service puts in place of each Key Vault reference.
SAMPLE_SECRETS = {
    "servicenow-client-secret": "sn-oauth-secret",
    "servicenow-password": "sn-password",
    "servicenow-webhook-secret": "hmac-secret-0123456789",
    "servicenow-webhook-previous-secret": "hmac-secret-previous-98765",
    "dataverse-client-secret": "entra-client-secret",
    "dataverse-certificate": "-----BEGIN PRIVATE KEY-----\nMII...\n-----END PRIVATE KEY-----\n",
    "dataverse-webhook-keys": json.dumps(["k" * 32]),
}


def _code_constant(module: str, name: str, fallback: str) -> str:
    """A constant from the code; the fallback only while the module is being written."""
    try:
        return str(getattr(importlib.import_module(module), name))
    except (ImportError, AttributeError):
        return fallback


BACKFILL_QUEUE = _code_constant("triage.backfill.spec", "BACKFILL_QUEUE", "enrich-backfill")
BUDGET_TABLE = _code_constant("connectors.backfill_pacing", "BUDGET_TABLE", "enrichbudget")


def _bound_queues() -> set[str]:
    """Every queue_name= in triggers/*.py, constants resolved through the trigger module."""
    names: set[str] = set()
    for path in sorted((ROOT / "triggers").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.keyword) and node.arg == "queue_name":
                if isinstance(node.value, ast.Constant):
                    names.add(str(node.value.value))
                elif isinstance(node.value, ast.Name):
                    module = importlib.import_module(f"triggers.{path.stem}")
                    names.add(str(getattr(module, node.value.id)))
    return names


def _webhook_routes() -> dict[str, str]:
    """function name -> route of the HTTP triggers in triggers/webhooks.py."""
    tree = ast.parse((ROOT / "triggers" / "webhooks.py").read_text("utf-8"))
    routes = {}
    for fn in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        for dec in fn.decorator_list:
            if isinstance(dec, ast.Call) and getattr(dec.func, "attr", "") == "route":
                [route] = [k.value for k in dec.keywords if k.arg == "route"]
                routes[fn.name] = route.value  # type: ignore[attr-defined]
    return routes


@pytest.fixture(scope="module")
def infra() -> dict[str, BicepFile]:
    return parse_all(load_texts())


def _broken(*edits: tuple[str, str, str]) -> dict[str, BicepFile]:
    """The templates with ``(file, old, new)`` replacements (each ``old`` must occur)."""
    texts = load_texts()
    for name, old, new in edits:
        assert old in texts[name], f"{old!r} not in {name}: update the broken copy"
        texts[name] = texts[name].replace(old, new)
    return parse_all(texts)


# ---- queues and tables ----------------------------------------------------------------------


def expected_queues() -> set[str]:
    queues = {JOBS_QUEUE, BACKFILL_QUEUE} | _bound_queues()
    return queues | {f"{q}-poison" for q in queues}


EXPECTED_TABLES = {REPLAY_TABLE, CLAIMS_TABLE, SHADOW_TABLE, BACKFILL_TABLE, BUDGET_TABLE}


def storage_name_problems(infra: dict[str, BicepFile]) -> list[str]:
    storage = infra[STORAGE]
    problems = []
    for kind, var, expected, pattern in (
        ("queues", "queueNames", expected_queues(), r"[a-z0-9](-?[a-z0-9])*"),
        ("tables", "tableNames", EXPECTED_TABLES, r"[A-Za-z][A-Za-z0-9]*"),
    ):
        names = storage.vars.get(var)
        assert isinstance(names, list), var
        if missing := expected - set(names):  # type: ignore[arg-type]
            problems.append(f"{kind} the code uses but the Bicep lacks: {sorted(missing)}")
        problems += [f"bad {kind} name {n!r}" for n in names if not re.fullmatch(pattern, str(n))]
        type_ = f"Microsoft.Storage/storageAccounts/{kind[:5]}Services/{kind}"
        loops = [r for r in storage.resources_of(type_) if f"in {var}:" in str(r.value)]
        if not loops:
            problems.append(f"no {type_} resource loops over {var}")
    return problems


def test_every_queue_and_table_the_code_uses_is_provisioned(infra):
    assert {"enrich-jobs", "enrich-backfill"} <= expected_queues()  # the scan found the bindings
    assert storage_name_problems(infra) == []


@pytest.mark.parametrize(
    "edit",
    [
        (STORAGE, "  'enrich-jobs'\n", ""),
        (STORAGE, "  'enrich-backfill-poison'\n", ""),
        (STORAGE, "  'enrichclaims'\n", "  'enrichclaim'\n"),
        (STORAGE, "  'enrichbudget'\n", ""),
        (STORAGE, "  'webhookreplay'\n", "  'webhook-replay'\n"),
        (STORAGE, "for queueName in queueNames:", "for queueName in ['enrich-jobs']:"),
    ],
)
def test_a_missing_or_misnamed_queue_or_table_is_caught(edit):
    assert storage_name_problems(_broken(edit))


# ---- app settings against domain/settings.py ------------------------------------------------


def _evaluate(value, params: set[str], samples: dict[str, str]) -> str:
    """What App Service would hand the app for one setting (Key Vault references resolved)."""
    if isinstance(value, str):
        if m := KV_REF.match(value):
            return SAMPLE_SECRETS[m[1]]

        def sub(m: re.Match[str]) -> str:
            return samples.get(m[1], f"<{m[1]}>")

        return re.sub(r"\$\{(\w+)\}", sub, value)
    if isinstance(value, Expr):
        text = value.text.strip()
        if m := re.fullmatch(r"string\((\w+)\)", text):
            text = m[1]
        if text in params:
            return samples.get(text, f"<{text}>")
    raise AssertionError(f"cannot evaluate setting value {value!r:.80}")


def settings_for(
    infra, servicenow: str | None, dataverse: str | None, *, rotating: bool = False
) -> dict[str, str]:
    """The app settings the module yields for one ServiceNow and one Dataverse auth mode."""
    func = infra[FUNC]
    blocks = [func.vars["hostSettings"], func.vars["behaviourSettings"]]
    if servicenow:
        blocks += [func.vars["serviceNowCommon"], func.vars["serviceNowAuthSettings"][servicenow]]
        if rotating:
            blocks.append(_rotation_block(func))
    if dataverse:
        blocks += [func.vars["dataverseCommon"], func.vars["dataverseAuthSettings"][dataverse]]
    samples = SAMPLE_PARAMS | {"serviceNowAuth": servicenow or "", "dataverseAuth": dataverse or ""}
    env: dict[str, str] = {}
    for block in blocks:
        assert isinstance(block, dict)
        env |= {k: _evaluate(v, set(func.params), samples) for k, v in block.items()}
    return env


def _rotation_block(func: BicepFile) -> dict[str, object]:
    """The settings ``serviceNowRotation`` adds when serviceNowWebhookRotating is true."""
    text = str(func.vars["serviceNowRotation"])
    m = re.fullmatch(r"\s*serviceNowWebhookRotating\s*\?\s*\{(.*)\}\s*:\s*\{\s*\}\s*", text, re.S)
    assert m, (
        f"serviceNowRotation is not 'serviceNowWebhookRotating ? {{...}} : {{}}': {text!r:.120}"
    )
    block = {}
    for line in m[1].strip().splitlines():
        name, _, value = line.strip().partition(":")
        block[name.strip()] = value.strip().strip("'")
    return block


def composition_problems(infra) -> list[str]:
    """The blocks settings_for reads are the ones the appsettings resource really unions."""
    func = infra[FUNC]
    [config] = func.resources_of("Microsoft.Web/sites/config")
    union = str(body(config.value)["properties"])
    problems = [
        f"appsettings does not include {var}"
        for var in (
            "hostSettings",
            "behaviourSettings",
            "pathSettings",
            "serviceNowSettings",
            "dataverseSettings",
        )
        if not re.search(rf"\b{var}\b", union)
    ]
    for platform, common, modes, auth in (
        ("serviceNowSettings", "serviceNowCommon", "serviceNowAuthSettings", "serviceNowAuth"),
        ("dataverseSettings", "dataverseCommon", "dataverseAuthSettings", "dataverseAuth"),
    ):
        text = str(func.vars[platform])
        if common not in text or f"{modes}[{auth}]" not in text:
            problems.append(f"{platform} is not {common} + {modes}[{auth}]")
    if "serviceNowRotation" not in str(func.vars["serviceNowSettings"]):
        problems.append("serviceNowSettings does not include serviceNowRotation")
    return problems


def test_settings_are_composed_from_the_blocks_the_tests_read(infra):
    assert composition_problems(infra) == []
    full = "union(serviceNowCommon, serviceNowRotation, serviceNowAuthSettings[serviceNowAuth])"
    assert composition_problems(_broken((FUNC, full, "{}")))
    no_rotation = "union(serviceNowCommon, serviceNowAuthSettings[serviceNowAuth])"
    assert composition_problems(_broken((FUNC, full, no_rotation))) == [
        "serviceNowSettings does not include serviceNowRotation"
    ]


def test_auth_modes_match_the_code(infra):
    for model, param, var in (
        (ServiceNowSettings, "serviceNowAuth", "serviceNowAuthSettings"),
        (DataverseSettings, "dataverseAuth", "dataverseAuthSettings"),
    ):
        code = set(get_args(model.model_fields["auth"].annotation))
        assert set(infra[MAIN].params[param].allowed) == code
        assert set(infra[FUNC].params[param].allowed) == code
        assert set(infra[FUNC].vars[var]) == code  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("servicenow", "dataverse", "rotating"),
    [
        ("oauth", None, False),
        ("basic", None, False),
        ("oauth", None, True),
        (None, "secret", False),
        (None, "certificate", False),
        (None, "federated", False),
        (None, "managed_identity", False),
        ("oauth", "managed_identity", False),
        ("basic", "federated", True),
    ],
)
def test_the_app_loads_its_settings_from_what_the_bicep_sets(
    infra, monkeypatch, servicenow, dataverse, rotating
):
    for name in [n for n in os.environ if n.startswith("ENRICH_")]:
        monkeypatch.delenv(name)
    env = settings_for(infra, servicenow, dataverse, rotating=rotating)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.backfill.schedule == SAMPLE_PARAMS["backfillSchedule"]
    assert settings.shadow_mode is True
    if servicenow:
        assert settings.servicenow is not None and settings.servicenow.auth == servicenow
        assert settings.webhook.secret is not None
        assert settings.webhook.accepted_secrets() == [
            SAMPLE_SECRETS[name].encode()
            for name in ("servicenow-webhook-secret", "servicenow-webhook-previous-secret")
            if rotating or name == "servicenow-webhook-secret"
        ]
    else:
        assert settings.servicenow is None
    if dataverse:
        assert settings.dataverse is not None and settings.dataverse.auth == dataverse
        assert [k.get_secret_value() for k in settings.dataverse_webhook.keys] == ["k" * 32]
        if dataverse in ("managed_identity", "federated"):
            assert (
                settings.dataverse.managed_identity_client_id == SAMPLE_PARAMS["identityClientId"]
            )
        if dataverse == "federated":
            assert settings.dataverse.client_id == SAMPLE_PARAMS["dataverseClientId"]
            assert settings.dataverse.tenant_id == SAMPLE_PARAMS["dataverseTenantId"]
        if dataverse == "certificate":
            assert settings.dataverse.certificate_pem is not None
            assert (
                settings.dataverse.certificate_pem.get_secret_value()
                == (SAMPLE_SECRETS["dataverse-certificate"])
            )
    else:
        assert settings.dataverse is None


def test_a_setting_the_app_needs_but_the_bicep_drops_is_caught(monkeypatch):
    for name in [n for n in os.environ if n.startswith("ENRICH_")]:
        monkeypatch.delenv(name)
    broken = _broken((FUNC, "    ENRICH_SERVICENOW__CLIENT_ID: serviceNowClientId\n", ""))
    for name, value in settings_for(broken, "oauth", None).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="ENRICH_SERVICENOW"):
        load_settings()


def host_setting_problems(infra) -> list[str]:
    func = infra[FUNC]
    names = {k for v in walk(dict(func.vars)) if isinstance(v, dict) for k in v}
    problems = [f"{n} is not used on Flex Consumption" for n in FLEX_UNSUPPORTED & names]
    host = func.vars["hostSettings"]
    assert isinstance(host, dict)
    if host.get("AzureWebJobsStorage__credential") != "managedidentity":
        problems.append("AzureWebJobsStorage__credential is not managedidentity")
    for name in ("accountName", "clientId", "queueServiceUri", "tableServiceUri"):
        if f"AzureWebJobsStorage__{name}" not in host:
            problems.append(f"AzureWebJobsStorage__{name} missing")
    if "APPLICATIONINSIGHTS_CONNECTION_STRING" not in host:
        problems.append("APPLICATIONINSIGHTS_CONNECTION_STRING missing")
    return problems


def test_host_storage_is_identity_based_and_flex_ready(infra):
    assert host_setting_problems(infra) == []
    for edit in [
        (FUNC, "AzureWebJobsStorage__credential: 'managedidentity'", "AzureWebJobsStorage: 'x'"),
        (FUNC, "  ENRICH_DRY_RUN:", "  FUNCTIONS_WORKER_RUNTIME: 'python'\n  ENRICH_DRY_RUN:"),
        (FUNC, "  AzureWebJobsStorage__tableServiceUri: tableEndpoint\n", ""),
    ]:
        assert host_setting_problems(_broken(edit)), edit


# ---- secrets --------------------------------------------------------------------------------


def secret_problems(infra) -> list[str]:
    """Secret settings are Key Vault references; secure parameters reach only the vault."""
    return _setting_secret_problems(infra) + _secure_param_problems(infra)


def _setting_secret_problems(infra) -> list[str]:
    main, func = infra[MAIN], infra[FUNC]
    problems = []
    vault_names = set(main.vars["secretNames"])  # type: ignore[arg-type]
    for block in walk(dict(func.vars)):
        if not isinstance(block, dict):
            continue
        for name, value in block.items():
            if isinstance(value, dict):
                continue  # an auth mode's block, not a setting
            ref = KV_REF.match(value) if isinstance(value, str) else None
            if SECRET_NAME.search(name) and not ref:
                problems.append(f"{name} is not a Key Vault reference")
            if ref and ref[1] not in vault_names:
                problems.append(f"{name} references {ref[1]}, which the vault never receives")
    if "keyVaultReferenceIdentity: identityId" not in func.text:
        problems.append("keyVaultReferenceIdentity is not the user-assigned identity")
    if any(p.secure for p in func.params.values()):
        problems.append("the function-app module takes a secret value")
    values = body(main.modules["keyVault"].value)["params"]["secretValues"]  # type: ignore[index]
    if set(values) != vault_names:  # type: ignore[arg-type]
        problems.append("secretValues and secretNames differ")
    return problems


def _secure_param_problems(infra) -> list[str]:
    main = infra[MAIN]
    secure = {n for n, p in main.params.items() if p.secure}
    problems = [f"secure parameter {n} has a default" for n in secure if main.params[n].has_default]
    for f in infra.values():
        own = secure | {n for n, p in f.params.items() if p.secure}
        for out_name, out in f.outputs.items():
            if used := set(re.findall(r"\w+", str(out.value))) & own:
                problems.append(f"output {out_name} carries secure {sorted(used)}")
    for mod_name, mod in main.modules.items():
        if mod_name != "keyVault" and (leaked := set(re.findall(r"\w+", str(mod.value))) & secure):
            problems.append(f"module {mod_name} receives secure {sorted(leaked)}")
    return problems


def test_secrets_are_key_vault_references_from_secure_parameters(infra):
    assert secret_problems(infra) == []
    assert len(infra[MAIN].vars["secretNames"]) == 7  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "edit",
    [
        (FUNC, "'@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/servicenow-password/)'",
         "serviceNowUsername"),
        (FUNC, "secrets/dataverse-webhook-keys/", "secrets/dataverse-webhook-key/"),
        (FUNC, "keyVaultReferenceIdentity: identityId", "keyVaultReferenceIdentity: ''"),
        (MAIN, "param serviceNowPassword string\n", "param serviceNowPassword string = 'x'\n"),
        (MAIN, "output AZURE_TENANT_ID string = tenant().tenantId",
         "output AZURE_TENANT_ID string = serviceNowWebhookSecret"),
        (MAIN, "    enableServiceNow: enableServiceNow\n",
         "    enableServiceNow: !empty(dataverseClientSecret)\n"),
        (MAIN, "      'dataverse-webhook-keys': enableDataverse ? dataverseWebhookKeys : ''\n", ""),
        (FUNC, "secrets/dataverse-certificate/)'", "secrets/dataverse-cert/)'"),
        (FUNC, "'@Microsoft.KeyVault(SecretUri=${keyVaultUri}secrets/dataverse-certificate/)'",
         "dataverseClientId"),
        (MAIN, "  'servicenow-webhook-previous-secret'\n", ""),
    ],
)  # fmt: skip
def test_a_plain_or_leaked_secret_is_caught(edit):
    assert secret_problems(_broken(edit))


def vault_problems(infra) -> list[str]:
    [vault] = infra[KEYVAULT].resources_of("Microsoft.KeyVault/vaults")
    props = body(vault.value)["properties"]
    assert isinstance(props, dict)
    return [
        f"vault {key} is not {want}"
        for key, want in (
            ("enableRbacAuthorization", True),
            ("enableSoftDelete", True),
            ("enablePurgeProtection", True),
        )
        if props.get(key) is not want
    ]


def test_key_vault_is_rbac_soft_delete_and_purge_protected(infra):
    assert vault_problems(infra) == []
    broken = _broken((KEYVAULT, "enablePurgeProtection: true", "enablePurgeProtection: false"))
    assert vault_problems(broken) == ["vault enablePurgeProtection is not True"]


# ---- storage account, roles, the app itself -------------------------------------------------


def storage_account_problems(infra) -> list[str]:
    [account] = infra[STORAGE].resources_of("Microsoft.Storage/storageAccounts")
    props = body(account.value)["properties"]
    assert isinstance(props, dict)
    problems = [
        f"storage {key} is {props.get(key)!r}, not {want!r}"
        for key, want in (
            ("allowSharedKeyAccess", False),
            ("allowBlobPublicAccess", False),
            ("minimumTlsVersion", "TLS1_2"),
            ("supportsHttpsTrafficOnly", True),
        )
        if props.get(key) != want or type(props.get(key)) is not type(want)
    ]
    for name, f in infra.items():
        if re.search(r"listKeys\(|AccountKey=|primaryKey", f.text):
            problems.append(f"{name} reads an account key")
    return problems


def test_storage_account_takes_no_keys_and_no_public_blobs(infra):
    assert storage_account_problems(infra) == []
    for edit in [
        (STORAGE, "allowSharedKeyAccess: false", "allowSharedKeyAccess: true"),
        (STORAGE, "allowBlobPublicAccess: false", "allowBlobPublicAccess: true"),
        (STORAGE, "minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: 'TLS1_0'"),
        (FUNC, "  AzureWebJobsStorage__accountName: storageAccountName\n",
         "  X: listKeys(storageAccountName, '2023-05-01').keys[0].value\n"),
    ]:  # fmt: skip
        assert storage_account_problems(_broken(edit)), edit


def app_roles(infra) -> dict[str, str]:
    """Role assignment symbol -> role definition id, for those given to the app's identity."""
    rbac = infra[RBAC]
    roles = rbac.vars["roles"]
    assert isinstance(roles, dict)
    out = {}
    for symbol in rbac.resources:
        assignments = rbac.resources_of("Microsoft.Authorization/roleAssignments")
        if rbac.resources[symbol] not in assignments:
            continue
        props = body(rbac.resources[symbol].value)["properties"]
        if str(get(props, "principalId")).strip() != "appPrincipalId":
            continue
        text = str(get(props, "roleDefinitionId"))
        if m := re.search(r"roles\.(\w+)", text):
            out[symbol] = str(roles[m[1]])
        else:
            ref = re.search(r"'([0-9a-f-]{36})'|(\w+)\)\s*$", text)
            assert ref, text
            out[symbol] = ref[1] or str(rbac.vars[ref[2]])
    return out


def role_problems(infra) -> list[str]:
    given = app_roles(infra)
    problems = [
        f"{sym} grants {FORBIDDEN_ROLES.get(r, r)}" for sym, r in given.items()
        if r not in ALLOWED_ROLES
    ]  # fmt: skip
    missing = set(ALLOWED_ROLES) - set(given.values())
    problems += [f"the identity lacks {ALLOWED_ROLES[r]}" for r in sorted(missing)]
    return problems


def test_the_identity_holds_exactly_the_data_roles_it_needs(infra):
    assert role_problems(infra) == []
    contributor = "b24988ac-6180-42a0-ab88-20f7358fae12"
    broken = _broken((RBAC, "storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'",
                      f"storageQueueDataContributor: '{contributor}'"))  # fmt: skip
    assert "queueContributor grants Contributor" in role_problems(broken)
    owner = _broken(
        (RBAC, "    principalId: deployerPrincipalId\n", "    principalId: appPrincipalId\n")
    )
    assert role_problems(owner) == [
        "deployerSecretsOfficer grants b86a8fe4-44ce-4948-aee5-eccb2c155cd7",
        "deployerCertificatesOfficer grants a4417e6f-fecd-4de8-b567-7b0420556985",
    ]


def app_problems(infra) -> list[str]:
    func = infra[FUNC]
    [plan] = func.resources_of("Microsoft.Web/serverfarms")
    [site] = func.resources_of("Microsoft.Web/sites")
    plan_body, site_body = body(plan.value), body(site.value)
    problems = []
    if get(plan_body, "sku.name") != "FC1" or get(plan_body, "sku.tier") != "FlexConsumption":
        problems.append("the plan is not Flex Consumption FC1")
    config = get(site_body, "properties.functionAppConfig")
    if get(config, "runtime.name") != "python" or func.params["pythonVersion"].default != "3.11":
        problems.append("the runtime is not Python 3.11")
    if get(config, "deployment.storage.authentication.type") != "UserAssignedIdentity":
        problems.append("the deployment container is not read with the identity")
    if str(get(config, "scaleAndConcurrency.maximumInstanceCount")) != "maximumInstanceCount":
        problems.append("maximumInstanceCount is not the parameter")
    if get(site_body, "properties.httpsOnly") is not True:
        problems.append("the site is not HTTPS only")
    if get(site_body, "identity.type") != "UserAssigned":
        problems.append("the site does not run as the user-assigned identity")
    return problems


def test_the_function_app_is_flex_consumption_python_311_with_the_identity(infra):
    assert app_problems(infra) == []
    for edit in [
        (FUNC, "name: 'FC1'", "name: 'Y1'"),
        (FUNC, "param pythonVersion string = '3.11'", "param pythonVersion string = '3.12'"),
        (FUNC, "httpsOnly: true", "httpsOnly: false"),
        (FUNC, "type: 'UserAssignedIdentity'", "type: 'SystemAssignedIdentity'"),
    ]:
        assert app_problems(_broken(edit)), edit


def output_problems(infra) -> list[str]:
    outputs = infra[MAIN].outputs
    routes = _webhook_routes()
    problems = []
    for output, function in (
        ("SERVICENOW_WEBHOOK_URL", "servicenow_webhook"),
        ("DYNAMICS_WEBHOOK_URL", "dynamics_webhook"),
    ):
        want = f"'https://${{functionApp.outputs.defaultHostName}}/api/{routes[function]}'"
        if output not in outputs or str(outputs[output].value) != want.strip("'"):
            problems.append(f"{output} is not {want}")
    for name in (
        "AZURE_FUNCTION_NAME",
        "AZURE_FUNCTION_IDENTITY_CLIENT_ID",
        "AZURE_KEY_VAULT_NAME",
    ):
        if name not in outputs:
            problems.append(f"output {name} missing")
    return problems


def test_outputs_give_the_webhook_urls_of_the_code(infra):
    host = json.loads((ROOT / "host.json").read_text("utf-8"))
    assert "routePrefix" not in json.dumps(host)  # the default "api" prefix applies
    assert output_problems(infra) == []
    broken = _broken((MAIN, "/api/dynamics/webhook'", "/api/dataverse/webhook'"))
    assert output_problems(broken) == [
        "DYNAMICS_WEBHOOK_URL is not 'https://${functionApp.outputs.defaultHostName}"
        "/api/dynamics/webhook'"
    ]


def test_parameters_file_names_every_parameter_without_a_default(infra):
    params = json.loads((ROOT / "infra" / "main.parameters.json").read_text("utf-8"))["parameters"]
    required = {n for n, p in infra[MAIN].params.items() if not p.has_default}
    assert required <= set(params)
    assert set(params) <= set(infra[MAIN].params)
    azure = (ROOT / "azure.yaml").read_text("utf-8")
    assert "host: function" in azure and "language: python" in azure


# ---- the deployment package (.funcignore) ---------------------------------------------------


def package_problems(ignore_text: str) -> list[str]:
    """What .funcignore would wrongly ship or wrongly leave out, on the repository's files."""
    import subprocess

    import pathspec  # installed with mypy (requirements-dev.txt)

    spec = pathspec.GitIgnoreSpec.from_lines(ignore_text.splitlines())
    listed = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    files = [f for f in listed if (ROOT / f).exists()] + [
        "local.settings.json",
        ".venv/lib/x.py",
        "node_modules/a/b.js",
        "triage/__pycache__/x.cpython-311.pyc",
        ".pytest_cache/v/x",
    ]
    shipped = {f for f in files if not spec.match_file(f)}
    problems = [
        f"ships {f}"
        for f in sorted(shipped)
        if f.split("/")[0] in {"tests", "bench", "docs", "infra", "node_modules", ".venv"}
        or "__pycache__" in f
        or f.startswith((".pytest_cache", "local.settings", "package", "requirements-"))
        or f in {"Makefile", "azure.yaml"}
    ]
    needed = {"function_app.py", "host.json", "requirements.txt"} | {
        f for f in files if f.startswith("domain/data/")
    }
    problems += [f"leaves out {f}" for f in sorted(needed - shipped)]
    for package in ("triggers", "triage", "connectors", "enrichers", "domain"):
        if not any(f.startswith(f"{package}/") and f.endswith(".py") for f in shipped):
            problems.append(f"leaves out {package}/")
    return problems


def test_the_package_holds_the_app_and_its_data_and_nothing_else():
    text = (ROOT / ".funcignore").read_text("utf-8")
    assert package_problems(text) == []
    assert "ships tests/test_infra.py" in package_problems(text.replace("tests/\n", ""))
    broken = text + "\n*.yaml\n"
    assert "leaves out domain/data/servicenow_default_mapping.yaml" in package_problems(broken)
    assert "leaves out domain/" in package_problems(text + "\ndomain/\n")
