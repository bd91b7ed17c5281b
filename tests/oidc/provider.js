// An OpenID Connect provider on loopback for levere's tests: the npm package oidc-provider, with
//
// - a public client `levere-cli` (PKCE S256, device grant, refresh tokens, loopback redirects on any
//   port as RFC 8252 allows native clients) and a confidential client `levere-portal`;
// - `acr` values for single- and two-factor sign-in (REFEDS profiles, as Life Science Login sends);
// - test accounts, signed in through a small form a test can post to (no consent screen: the grant
//   is made on first use).
//
// Usage: node provider.js PORT [JWKS_FILE]. PORT 0 (the default) lets the system pick a free port;
// the first line on stdout, `oidc-provider listening on ISSUER`, says which. The signing keys are read
// from JWKS_FILE (a JSON {"keys": [...]} with private keys) so that tests can also make tokens with the
// provider's key. With OIDC_STOP_WITH_STDIN=1 the provider exits when its stdin closes, so one started
// by a test run that is killed does not outlive it.
import { readFileSync } from 'node:fs';
import http from 'node:http';

import Provider, { errors } from 'oidc-provider';

const port = Number(process.argv[2] || 0);
const jwks = process.argv[3] ? JSON.parse(readFileSync(process.argv[3], 'utf8')) : undefined;
const ttl = (name, fallback) => Number(process.env[`OIDC_TTL_${name}`] || fallback);

export const MFA = 'https://refeds.org/profile/mfa';
export const SFA = 'https://refeds.org/profile/sfa';
const PASSWORD = 'test-password';

const ACCOUNTS = {
  alice: { email: 'alice@uni.example', email_verified: true, name: 'Alice Example' },
  bob: { email: 'bob@uni.example', email_verified: false, name: 'Bob Example' },
  carol: { email: 'carol@uni.example', email_verified: true, name: 'Carol Example' },
  // releases Crypt4GH public keys, as Life Science Login does: one as a .pub file, one as its bare
  // base64 line, and two that are not keys (a low-order point, and text)
  dora: {
    email: 'dora@uni.example',
    email_verified: true,
    name: 'Dora Example',
    crypt4ghPublicKeys: [
      '-----BEGIN CRYPT4GH PUBLIC KEY-----\nS0pQvp1TcRvIXkydQld6kPry2bFgC4bmX8DwLNRaQxk=\n-----END CRYPT4GH PUBLIC KEY-----\n',
      'o3jkMZhK9nRzTvZjtIPmyw7WTJ9saUuKq8og/GELLRg=',
      'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=',
      'not a key at all',
    ],
  },
};

const configuration = {
  clients: [
    {
      client_id: 'levere-cli',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/callback'],
    },
    {
      client_id: 'levere-portal',
      client_secret: 'portal-secret-for-tests-only',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: (process.env.OIDC_PORTAL_REDIRECT_URIS || 'http://127.0.0.1:49791/auth/oidc/callback').split(','),
    },
  ],
  ...(jwks ? { jwks } : {}),
  cookies: { keys: ['levere-test-provider-cookie-key'] },
  acrValues: [SFA, MFA],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    crypt4gh: ['crypt4ghPublicKeys'],
  },
  scopes: ['openid', 'email', 'profile', 'crypt4gh', 'offline_access'],
  features: {
    devInteractions: { enabled: false },
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
  },
  ttl: {
    AccessToken: ttl('ACCESS_TOKEN', 3600),
    AuthorizationCode: 60,
    DeviceCode: ttl('DEVICE_CODE', 600),
    IdToken: ttl('ID_TOKEN', 3600),
    Interaction: 600,
    Grant: 3600,
    Session: 3600,
    RefreshToken: 86400,
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(_ctx, id) {
    const account = ACCOUNTS[id];
    if (!account) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...account }) };
  },
  // every scope and claim asked for is granted: there is no consent screen in the tests
  async loadExistingGrant(ctx) {
    const existing = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (existing) return ctx.oidc.provider.Grant.find(existing);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email profile crypt4gh offline_access');
    grant.addOIDCClaims(['email', 'email_verified', 'name', 'crypt4ghPublicKeys']);
    await grant.save();
    return grant;
  },
  async issueRefreshToken(_ctx, client) {
    return client.grantTypeAllowed('refresh_token');
  },
  renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
};

// the issuer names the port, known only once the server listens (see the end of this file)
let provider;
let oidc;

function readForm(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(new URLSearchParams(Buffer.concat(chunks).toString('utf8'))));
    req.on('error', reject);
  });
}

function page(res, status, body) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8' });
  res.end(`<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Test provider</title></head><body>${body}</body></html>`);
}

// The sign-in form: account, password, and whether the second factor was given. A test posts it
// like a browser would (the uid comes from the redirect to /interaction/UID).
async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new errors.InvalidRequest('interaction mismatch');
  if (details.prompt.name === 'consent') {
    // no consent screen in the tests: grant what was asked for
    const { accountId } = details.session;
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId, clientId: details.params.client_id });
    const missing = details.prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  if (req.method === 'GET') {
    const wanted = details.params.acr_values ? `<p>Asked for: <code>${details.params.acr_values}</code></p>` : '';
    return page(res, 200, `<h1>Sign in to the test provider</h1>${wanted}
      <form method="post" action="/interaction/${uid}/login">
        <label>Account <input name="login"></label>
        <label>Password <input name="password" type="password"></label>
        <label><input name="mfa" type="checkbox" value="yes"> Second factor given</label>
        <button type="submit">Sign in</button>
      </form>
      <form method="post" action="/interaction/${uid}/abort"><button type="submit">Cancel</button></form>`);
  }
  const form = await readForm(req);
  if (action === 'abort') {
    return provider.interactionFinished(req, res, {
      error: 'access_denied',
      error_description: 'the user cancelled the sign-in',
    }, { mergeWithLastSubmission: false });
  }
  const login = form.get('login');
  if (!ACCOUNTS[login] || form.get('password') !== PASSWORD) {
    return page(res, 403, '<p>wrong account or password</p>');
  }
  const mfa = form.get('mfa') === 'yes';
  return provider.interactionFinished(req, res, {
    login: { accountId: login, acr: mfa ? MFA : SFA, amr: mfa ? ['pwd', 'otp'] : ['pwd'] },
  }, { mergeWithLastSubmission: false });
}

const server = http.createServer((req, res) => {
  const match = /^\/interaction\/([\w-]+)(?:\/(login|abort))?$/.exec(req.url.split('?')[0]);
  if (!match) return oidc(req, res);
  return interaction(req, res, match[1], match[2]).catch((err) => {
    page(res, err.statusCode || 500, `<p>${err.name}: ${err.message}</p>`);
  });
});

server.listen(port, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  provider = new Provider(issuer, configuration);
  oidc = provider.callback();
  process.stdout.write(`oidc-provider listening on ${issuer}\n`);
});

if (process.env.OIDC_STOP_WITH_STDIN === '1') {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}

process.on('SIGTERM', () => server.close(() => process.exit(0)));
