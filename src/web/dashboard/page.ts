/**
 * The dashboard's HTML page, served at `GET /` by `WebReplicas`: a shell
 * that loads the bundled script (`/dashboard.js`, built from `main.ts` by
 * `scripts/build-web.ts`) and tells it where the WebSocket endpoint is. The
 * token travels in the URL's fragment (`/#token=...`), which the browser
 * never sends to a server.
 * @internal
 */

const escape = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)

/** The page, for the WebSocket endpoint at `path`. */
export const dashboardPage = (path: string): string => `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="dstate-web-path" content="${escape(path)}">
<title>dstate dashboard</title>
<style>
  :root { color-scheme: light dark; --muted: #8a8f98; --ok: #2e9d5b; --warn: #d08a1c; --bad: #d04545; }
  body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5rem; max-width: 1200px; }
  h1 { font-size: 1.3rem; margin: 0 0 .3rem; }
  h2 { font-size: 1.05rem; margin: 1.4rem 0 .4rem; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: .25rem .6rem; border-bottom: 1px solid rgba(128,128,128,.25); font-variant-numeric: tabular-nums; }
  th { font-weight: 600; color: var(--muted); }
  .muted { color: var(--muted); }
  .ok { color: var(--ok); } .warn { color: var(--warn); } .bad { color: var(--bad); }
  .pill { display: inline-block; padding: 0 .5rem; border-radius: 1rem; border: 1px solid currentColor; font-size: .85em; }
  canvas { width: 100%; height: 160px; border: 1px solid rgba(128,128,128,.25); border-radius: 4px; }
  .plots { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
  code { font-size: .9em; }
</style>
</head>
<body>
<h1>dstate <span id="node" class="muted"></span> <span id="connection" class="pill muted">connecting</span></h1>
<div id="error" class="bad"></div>
<h2>Members</h2>
<table id="members"><thead><tr><th>node</th><th>reachability</th></tr></thead><tbody></tbody></table>
<div id="states"></div>
<h2>Over the last minutes</h2>
<div class="plots">
  <div><div class="muted">mutations/s per state (cluster-wide, from the generations seen)</div><canvas id="rate" width="560" height="160"></canvas></div>
  <div><div class="muted">staleness per state (ms, the stalest view)</div><canvas id="staleness" width="560" height="160"></canvas></div>
</div>
<div id="legend" class="muted"></div>
<script type="module" src="/dashboard.js"></script>
</body>
</html>
`
