#!/usr/bin/env bash
# Checks the operator's kit in docs/ops/ with Prometheus's own promtool:
#
#   1. promtool check rules docs/ops/alerts.yml       (syntax, PromQL, templates)
#   2. promtool test rules docs/ops/alerts.test.yml   (which alerts fire on synthetic series)
#   3. every PromQL query of docs/ops/grafana-dashboard.json (panel targets and template
#      variables, Grafana's $variables filled in) parsed by promtool as recording rules
#
# That the metrics named exist is checked against a running daemon by
# tests/operator_kit.rs (cargo test).
#
# promtool: $PROMTOOL if set, else one on PATH, else the one cached under
# $FLAGTALLY_INFRA (scripts/infra.sh's cache, default ~/.cache/flagtally), else it is
# fetched once from Debian's `prometheus` package (apt-get download; the package is
# unpacked into the cache, not installed: no service, no user) and reused.
#
# Usage: bash scripts/check-ops.sh
set -euo pipefail
cd "$(dirname "$0")/.."

INFRA="${FLAGTALLY_INFRA:-${XDG_CACHE_HOME:-$HOME/.cache}/flagtally}"
say() { printf 'check-ops: %s\n' "$*" >&2; }

find_promtool() {
  if [ -n "${PROMTOOL:-}" ]; then
    echo "$PROMTOOL"
    return
  fi
  if command -v promtool >/dev/null 2>&1; then
    command -v promtool
    return
  fi
  local cached
  cached=$(ls -d "$INFRA"/prometheus-deb-*/usr/bin/promtool 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$cached" ] && [ -x "$cached" ]; then
    echo "$cached"
    return
  fi
  command -v apt-get >/dev/null || { say "no promtool, and no apt-get to fetch Debian's prometheus package: set PROMTOOL"; exit 1; }
  say "fetching promtool from Debian's prometheus package into $INFRA (once)"
  local tmp
  tmp=$(mktemp -d)
  # A root-owned folder: apt-get's download sandbox user cannot write to it, so apt
  # downloads as root and says so on stderr; harmless.
  if ! (cd "$tmp" && apt-get download prometheus >&2 2>/dev/null); then
    say "apt-get download failed; refreshing the package lists (apt-get update) and retrying"
    apt-get update -q >&2
    (cd "$tmp" && apt-get download prometheus >&2)
  fi
  local deb version dest
  deb=$(ls "$tmp"/prometheus_*.deb)
  version=$(dpkg-deb -f "$deb" Version)
  dest="$INFRA/prometheus-deb-$version"
  mkdir -p "$dest.tmp"
  dpkg-deb -x "$deb" "$dest.tmp"
  rm -rf "$dest"
  mv "$dest.tmp" "$dest"
  rm -rf "$tmp"
  echo "$dest/usr/bin/promtool"
}

PROMTOOL=$(find_promtool)
say "using $("$PROMTOOL" --version 2>&1 | head -n 1) ($PROMTOOL)"

"$PROMTOOL" check rules docs/ops/alerts.yml
(cd docs/ops && "$PROMTOOL" test rules alerts.test.yml)

# The dashboard's queries as recording rules (JSON is YAML), so promtool parses each.
queries=$(mktemp --suffix=.json)
trap 'rm -f "$queries"' EXIT
python3 - docs/ops/grafana-dashboard.json >"$queries" <<'PY'
import json, re, sys

dashboard = json.load(open(sys.argv[1]))

def fill(expr):
    # Grafana's variables, as a query would be sent: a range and the "All" regex.
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
    return re.sub(r"\$\{?(job|instance)\}?", ".*", expr)

rules = []
def walk(panels):
    for p in panels:
        walk(p.get("panels", []))
        for t in p.get("targets", []):
            rules.append({"record": f"dashboard:panel_{p['id']}_{t['refId']}", "expr": fill(t["expr"])})
walk(dashboard["panels"])
for v in dashboard.get("templating", {}).get("list", []):
    q = v.get("query")
    q = q.get("query") if isinstance(q, dict) else q
    m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", q or "")
    if m:
        rules.append({"record": f"dashboard:variable_{v['name']}", "expr": f"count by ({m.group(2)}) ({fill(m.group(1))})"})
    elif q:
        rules.append({"record": f"dashboard:variable_{v['name']}", "expr": fill(q)})
json.dump({"groups": [{"name": "grafana-dashboard", "rules": rules}]}, sys.stdout, indent=1)
PY
say "dashboard queries:"
"$PROMTOOL" check rules "$queries"
say "ok"
