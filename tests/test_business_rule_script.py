"""The shipped ServiceNow business rule signs requests the way the webhook verifies them.

Runs docs/servicenow-business-rule.js under Node with small shims of the Glide APIs it uses
(GlideCertificateEncryption.generateMac takes a base64 key and returns a base64 HMAC, as the
ServiceNow community documents), then feeds the captured request to our verifier.
"""

import json
import subprocess
from pathlib import Path

from triage.inbound import parse_event, verify_signature

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_800_000_000

SHIM = r"""
const crypto = require('crypto');
const fs = require('fs');
const props = {'x_triage.webhook_url': 'https://fn.example/api/servicenow/webhook',
               'x_triage.webhook_secret': 'top-secret'};
let captured = {headers: {}};
global.gs = {getProperty: (k, d) => (k in props ? props[k] : d), warn: (m) => { captured.warn = m; },
             getUserName: () => 'anna.b'};
global.GlideDateTime = function () { this.getNumericValue = () => %NOW% * 1000 + 123; };
global.GlideStringUtil = {base64Encode: (s) => Buffer.from(s, 'utf8').toString('base64')};
global.GlideCertificateEncryption = function () {
  this.generateMac = (b64key, alg, data) => {
    if (alg !== 'HmacSHA256') throw new Error('unexpected algorithm ' + alg);
    return crypto.createHmac('sha256', Buffer.from(b64key, 'base64')).update(data, 'utf8').digest('base64');
  };
};
global.sn_ws = {RESTMessageV2: function () {
  this.setEndpoint = (u) => { captured.url = u; };
  this.setHttpMethod = (m) => { captured.method = m; };
  this.setRequestHeader = (k, v) => { captured.headers[k] = v; };
  this.setHttpTimeout = () => {};
  this.setRequestBody = (b) => { captured.body = b; };
  this.execute = () => ({getStatusCode: () => 202, getBody: () => ''});
}};
const values = {number: 'INC0010042', sys_updated_by: 'anna.b', sys_mod_count: '0'};
global.current = {getUniqueValue: () => '0123456789abcdef0123456789abcdef',
                  getTableName: () => 'incident', getValue: (f) => values[f]};
global.previous = null;
eval(fs.readFileSync(process.argv[2], 'utf8'));
process.stdout.write(JSON.stringify(captured));
"""


def test_business_rule_request_passes_our_verification(tmp_path):
    shim = tmp_path / "shim.js"
    shim.write_text(SHIM.replace("%NOW%", str(NOW)))
    script = ROOT / "docs" / "servicenow-business-rule.js"
    out = subprocess.run(
        ["node", str(shim), str(script)], capture_output=True, text=True, check=True, timeout=30
    )
    captured = json.loads(out.stdout)
    assert captured["method"] == "POST"
    body = captured["body"].encode()
    verify_signature(body, captured["headers"], b"top-secret", now=lambda: NOW + 5)
    event = parse_event(body, captured["headers"]["Content-Type"], allowed_tables=["incident"])
    assert event.sys_id == "0123456789abcdef0123456789abcdef"
    assert event.number == "INC0010042"
