#!/usr/bin/env bash
# The embedded default: the csdl lab launched against an emulated EC2 API (moto) and, as
# root on Linux, a booted stand-in host at the Elastic IP. It never touches your own
# ~/.ssh or shell files: HOME is a sandbox inside the repo (.demo/home), and ssh is pointed
# at the sandbox's ssh config (ssh finds ~/.ssh from the passwd entry, not from $HOME).
#   scripts/demo.sh up | shell | down
#   scripts/demo.sh sandbox   (only the sandbox home and the demo shell's start-up file;
#                              up and shell make them too)
# GPU_LAB_DEMO_DIR puts the demo elsewhere than .demo (the tests do).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
demo="${GPU_LAB_DEMO_DIR:-$repo/.demo}"
cloud_dir="$demo/cloud"
py="$repo/.venv/bin/python"
sandbox_home="$demo/home"
# The demo shell's start-up file: the sandbox's ~/.bashrc, and ssh and scp given its ssh config.
rcfile="$demo/shell.bashrc"
# down deletes only a folder that holds this mark (GPU_LAB_DEMO_DIR could name any folder).
mark="$demo/.gpu_lab_demo"
say() { printf '\033[1m[gpu_lab demo]\033[0m %s\n' "$*"; }

# The sandbox: a home with its own ~/.ssh. Its ssh config sends the known_hosts of any host
# without an entry of its own (the tutorial's `ssh ubuntu@$CSDL_IP`, say) to the sandbox too.
# gpu_lab puts its Include block above it at the top of the file, and ssh takes the first
# value it obtains, so a lab's own UserKnownHostsFile (its pinned key) wins.
sandbox() {
  mkdir -p "$sandbox_home"
  touch "$mark"
  if [[ ! -d "$sandbox_home/.ssh" ]]; then
    mkdir -m 0700 "$sandbox_home/.ssh"
  fi
  # At the end of the file (a sandbox of an older demo may hold gpu_lab's block already).
  if ! grep -qs '^# gpu_lab demo: the sandbox' "$sandbox_home/.ssh/config"; then
    (umask 077 && cat >>"$sandbox_home/.ssh/config" <<EOF
# gpu_lab demo: the sandbox's ssh config. The demo shell's ssh and scp read this file (-F),
# never your own ~/.ssh. Hosts without an entry of their own keep their keys in the sandbox.
Host *
    UserKnownHostsFile "$sandbox_home/.ssh/known_hosts"
    IdentityFile "$sandbox_home/.ssh/id_ed25519"
EOF
    )
  fi
  cat >"$rcfile" <<EOF
# gpu_lab demo shell (written by scripts/demo.sh). ssh reads ~/.ssh/config and expands "~"
# from the passwd entry, not from \$HOME: without -F it would use your own ~/.ssh.
if [ -f $(printf %q "$sandbox_home/.bashrc") ]; then . $(printf %q "$sandbox_home/.bashrc"); fi
ssh() { command ssh -F $(printf %q "$sandbox_home/.ssh/config") "\$@"; }
scp() { command scp -F $(printf %q "$sandbox_home/.ssh/config") "\$@"; }
sftp() { command sftp -F $(printf %q "$sandbox_home/.ssh/config") "\$@"; }
PS1="(gpu_lab demo) \${PS1:-\\\$ }"
EOF
}

sandbox_env() {
  sandbox
  export HOME="$sandbox_home" GPU_LAB_DEMO=1
  # The emulated security group sees connections from this machine's loopback.
  export GPU_LAB_SSH_CIDR=127.0.0.1/32
  # Ansible's own ssh (the host plays, the shortcuts' playbooks) reads the sandbox's config too.
  ANSIBLE_SSH_EXTRA_ARGS="-F $(printf %q "$sandbox_home/.ssh/config")"
  export ANSIBLE_SSH_EXTRA_ARGS
  # ssh's connection-sharing socket must fit a Unix socket path (about 100 bytes, with the
  # suffix ssh adds): under a sandbox home deep in a checkout it would not, and every host
  # would be unreachable. A short folder of this user's instead.
  ANSIBLE_SSH_CONTROL_PATH_DIR="${TMPDIR:-/tmp}/gpu_lab-cp-$(id -u)"
  export ANSIBLE_SSH_CONTROL_PATH_DIR
  mkdir -p "$ANSIBLE_SSH_CONTROL_PATH_DIR" && chmod 0700 "$ANSIBLE_SSH_CONTROL_PATH_DIR"
  eval "$(cd "$repo" && "$py" -m local_cloud env --state-dir "$cloud_dir")"
  export PATH="$repo/.venv/bin:$PATH"
}

case "${1:-up}" in
  up)
    say "sandbox home: $sandbox_home (your own ~/.ssh and shell files are not touched)"
    (cd "$repo" && "$py" -m local_cloud up --state-dir "$cloud_dir")
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
    say "ssh and scp here use the sandbox's ssh config and known_hosts ($HOME/.ssh), never your own ~/.ssh"
    cd "$repo" && exec bash --rcfile "$rcfile" -i
    ;;
  sandbox)
    sandbox
    say "sandbox home: $sandbox_home; demo shell start-up file: $rcfile"
    ;;
  down)
    if [[ -f "$cloud_dir/cloud.json" ]]; then
      (cd "$repo" && "$py" -m local_cloud down --state-dir "$cloud_dir") || true
    fi
    if [[ -e "$demo" && ! -e "$mark" && "$demo" != "$repo/.demo" ]]; then
      echo "$demo is not a gpu_lab demo folder (no $mark): not deleted" >&2
      exit 1
    fi
    rm -rf "$demo"
    say "demo removed (emulated cloud stopped, stand-in hosts destroyed, $demo deleted)"
    ;;
  *) echo "usage: $0 up|shell|down|sandbox" >&2; exit 2 ;;
esac
