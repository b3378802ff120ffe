# Sourced by the example scripts. parse_options SCRIPT HELP_LINES "$@": each
# `--some-option VALUE` whose name is listed in $valued (" some_option ... ") sets the
# shell variable some_option; --smoke is skipped (the caller sets its sizes first);
# -h/--help prints lines HELP_LINES (e.g. 2,17) of the script; anything else is an error.
parse_options() {
  local script="$1" help="$2" name
  shift 2
  while [ $# -gt 0 ]; do
    name="${1#--}"
    name="${name//-/_}"
    if [ "$1" = --smoke ]; then
      shift
    elif [ "$1" = -h ] || [ "$1" = --help ]; then
      sed -n "${help}p" "$0"
      exit 0
    elif [[ "$1" == --* && "$valued" == *" $name "* && $# -ge 2 ]]; then
      printf -v "$name" '%s' "$2"
      shift 2
    else
      echo "$script: unknown option $1 (see --help)" >&2
      exit 2
    fi
  done
}

# start_run SUBDIR...: the environment (scripts/setup_env.sh, unless $venv names one),
# $data (unless empty) and $workdir made absolute, a fresh $workdir with SUBDIRs, the repository root as
# working directory, and $started for the elapsed time.
start_run() {
  if [ -z "${venv:-}" ]; then
    bash "$root/scripts/setup_env.sh"
    venv="${DIFFUSION_PLUGIN_VENV:-$root/.venv}"
  fi
  export PATH="$venv/bin:$PATH" PYTHONWARNINGS=ignore
  [ -z "$data" ] || data="$(realpath "$data")"
  workdir="$(realpath -m "$workdir")"
  cd "$root"
  rm -rf "$workdir"
  for subdir in "$@"; do
    mkdir -p "$workdir/$subdir"
  done
  started=$SECONDS
}
