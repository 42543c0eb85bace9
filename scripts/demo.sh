#!/usr/bin/env bash
# The embedded default: the csdl lab launched against an emulated EC2 API (moto) and, as
# root on Linux, a booted stand-in host at the Elastic IP. It never touches your own
# ~/.ssh or shell files: HOME is a sandbox inside the repo (.demo/home).
#   scripts/demo.sh up | shell | down
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
demo="$repo/.demo"
cloud_dir="$demo/cloud"
py="$repo/.venv/bin/python"
say() { printf '\033[1m[gpu_lab demo]\033[0m %s\n' "$*"; }

sandbox_env() {
  export HOME="$demo/home" GPU_LAB_DEMO=1
  mkdir -p "$HOME"
  # The emulated security group sees connections from this machine's loopback.
  export GPU_LAB_SSH_CIDR=127.0.0.1/32
  eval "$(cd "$repo" && "$py" -m tests.harness.cloud env --state-dir "$cloud_dir")"
  export PATH="$repo/.venv/bin:$PATH"
}

case "${1:-up}" in
  up)
    say "sandbox home: $demo/home (your own ~/.ssh and shell files are not touched)"
    (cd "$repo" && "$py" -m tests.harness.cloud up --state-dir "$cloud_dir")
    sandbox_env
    info() { "$py" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$cloud_dir/cloud.json" "$1"; }
    extra=()
    if [[ "$(info hosts)" != True ]]; then
      say "no stand-in host can boot here ($(info hosts_reason)): running the AWS half only"
      extra=(-e gpu_lab_wait_for_ssh=false)
    else
      # The harness serves a small course repository to the stand-in host.
      extra=(-e "gpu_lab_course_repo=$(info course_repo)")
    fi
    say "ansible-playbook launch.yml  (against $AWS_ENDPOINT_URL)"
    cd "$repo" && ansible-playbook launch.yml "${extra[@]}"
    say "next: make demo-shell opens a shell in the sandbox; there, ssh-csdl logs in with the"
    say "Jupyter tunnel open; csdl-jupyter (in a second demo-shell) prints the Jupyter URL and opens"
    say "it. csdl-status, csdl-stop and csdl-start work too. make demo-clean removes everything."
    ;;
  shell)
    sandbox_env
    say "sandbox shell (HOME=$HOME); exit to leave"
    cd "$repo" && exec bash --rcfile "$HOME/.bashrc" -i
    ;;
  down)
    if [[ -f "$cloud_dir/cloud.json" ]]; then
      (cd "$repo" && "$py" -m tests.harness.cloud down --state-dir "$cloud_dir") || true
    fi
    rm -rf "$demo"
    say "demo removed (emulated cloud stopped, stand-in hosts destroyed, $demo deleted)"
    ;;
  *) echo "usage: $0 up|shell|down" >&2; exit 2 ;;
esac
