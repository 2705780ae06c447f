# What both GPU scripts do first (sourced by gpu_headline.sh and gpu_study.sh): run from the repository root, check
# $OUT, read the common settings; log_to NAME then sends all output to $OUT/NAME as well, and step names each step
# with the seconds since the start.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
: "${OUT:?set OUT to the folder the results go to}"
mkdir -p "$OUT"
DRY=${GPU_DRY_RUN:-0}
BUDGET_S=${GPU_BUDGET_S:-540}
KIT=${GPU_KIT:-.gpu}
START=$SECONDS
log_to() { exec > >(tee -a "$OUT/$1") 2>&1; }
step() { echo "== [$((SECONDS - START)) s] $*"; }
export NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
