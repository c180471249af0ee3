/*
 * ServiceNow business rule that notifies the enrichment function when an incident is created.
 *
 * Table: Incident [incident]   When: async   Insert: true   Update: false
 * Condition (Advanced): gs.getUserName() != gs.getProperty('x_triage.integration_user', 'svc_ticket_enricher')
 *
 * System properties (System Properties > New), readable by admin only:
 *   x_triage.webhook_url      https://<function-app>.azurewebsites.net/api/servicenow/webhook
 *   x_triage.webhook_secret   the same value as the function app's ENRICH_WEBHOOK__SECRET
 *                             (type "password2"; rotate by sending two v1= signatures, see below)
 *   x_triage.integration_user the user name our function writes as (loop guard)
 *
 * Signature: X-Triage-Signature: v1=<base64 HMAC-SHA256(secret, "<timestamp>.<body>")>,
 *            X-Triage-Timestamp: <unix seconds>. The function refuses requests older than
 *            300 s and compares in constant time. GlideCertificateEncryption.generateMac takes
 *            the key base64-encoded and returns the MAC base64-encoded.
 *
 * Only identifiers are sent: the function re-reads the incident through the Table API and never
 * trusts the payload. Runs async, so the user's transaction is not held up by the HTTP call.
 */
(function executeRule(current, previous /* null when async */) {
    var url = gs.getProperty('x_triage.webhook_url');
    var secret = gs.getProperty('x_triage.webhook_secret');
    if (!url || !secret) {
        gs.warn('x_triage: webhook_url or webhook_secret not set; incident ' + current.getValue('number') + ' not sent');
        return;
    }

    var body = JSON.stringify({
        sys_id: current.getUniqueValue(),
        table: current.getTableName(),
        number: current.getValue('number'),
        sys_updated_by: current.getValue('sys_updated_by'),
        sys_mod_count: parseInt(current.getValue('sys_mod_count'), 10) || 0
    });
    var timestamp = String(Math.floor(new GlideDateTime().getNumericValue() / 1000));
    var mac = new GlideCertificateEncryption().generateMac(
        GlideStringUtil.base64Encode(secret), 'HmacSHA256', timestamp + '.' + body);

    var request = new sn_ws.RESTMessageV2();
    request.setEndpoint(url);
    request.setHttpMethod('POST');
    request.setRequestHeader('Content-Type', 'application/json');
    request.setRequestHeader('Accept', 'application/json');
    request.setRequestHeader('X-Triage-Timestamp', timestamp);
    request.setRequestHeader('X-Triage-Signature', 'v1=' + mac);
    request.setHttpTimeout(10000);
    request.setRequestBody(body);

    try {
        var response = request.execute();
        var status = response.getStatusCode();
        if (status != 202) {
            gs.warn('x_triage: webhook for ' + current.getValue('number') + ' answered HTTP ' + status + ': ' + response.getBody());
        }
    } catch (ex) {
        // A missed event is picked up by the scheduled backfill; never fail the user's insert.
        gs.warn('x_triage: webhook for ' + current.getValue('number') + ' failed: ' + ex.message);
    }
})(current, previous);
