#!/usr/bin/env bash
# Online Experiential Learning, end to end: a baseline evaluation, then ROUNDS rounds of
#   collect (extraction + deployment games, no knowledge) -> extract (knowledge pool)
#   -> distill (theta_r) -> evaluate (theta_r, and theta_{r-1} with the knowledge in context),
# then the report (table + plot). Every stage writes its output atomically and is skipped when its
# output exists, so rerunning the same command resumes a stopped run.
#
#   bash loop.sh                                  # default model on this machine (CPU ok)
#   SETTING=smoke bash loop.sh                    # a minutes-long check of the whole pipeline
#   SETTING=paper MODEL=Qwen/Qwen3-1.7B bash loop.sh   # paper-scale knobs, one GPU
# Any knob below can be set in the environment, e.g. ROUNDS=3 RUN=runs/mine bash loop.sh
set -euo pipefail
cd "$(dirname "$0")"

SETTING=${SETTING:-default}
case "$SETTING" in  # defaults per setting; an explicit environment variable always wins
  smoke)   d=(2 2 4 3 2 2 2 2 3 2 1e-5 24 5 256 32 0);;
  default) d=(2 8 16 20 12 4 20 8 12 4 1e-5 24 20 512 256 0);;
  paper)   d=(3 32 128 100 50 10 50 32 20 8 5e-6 512 541 2048 1024 1);;
  *) echo "unknown SETTING=$SETTING (smoke, default, paper)"; exit 2;;
esac
MODEL=${MODEL:-smollm2-135m}      # hub name, local HF folder, or the built-in default
RUN=${RUN:-runs/$SETTING}         # everything this run writes goes here
ROUNDS=${ROUNDS:-${d[0]}}         # OEL rounds
N_EXTRACT=${N_EXTRACT:-${d[1]}}   # extraction games per round (fresh seeds each round)
N_DEPLOY=${N_DEPLOY:-${d[2]}}     # deployment games per round: their turn prompts train the student
N_EVAL=${N_EVAL:-${d[3]}}         # held-out in-distribution games (same every round)
N_OOD=${N_OOD:-${d[4]}}           # out-of-distribution games (same every round)
CHAINS=${CHAINS:-${d[5]}}         # knowledge chains K (the pool size)
STEPS=${STEPS:-${d[6]}}           # distillation steps per round
BATCH=${BATCH:-${d[7]}}           # prompts per distillation step
MAX_TURNS=${MAX_TURNS:-${d[8]}}   # turn limit per game
HISTORY=${HISTORY:-${d[9]}}       # turns of the game log shown in the prompt
LR=${LR:-${d[10]}}                # distillation learning rate, constant (135M: 5e-5 collapsed the policy in one round, README)
MAX_NEW=${MAX_NEW:-${d[11]}}      # response cap per turn (raise for thinking models)
IFEVAL_N=${IFEVAL_N:-${d[12]}}    # instruction-following prompts (OOD); 0 = all
KNOW_TOKENS=${KNOW_TOKENS:-${d[13]}}  # knowledge budget in tokens
IFEVAL_NEW=${IFEVAL_NEW:-${d[14]}}  # response cap for IFEval answers
CURVE=${CURVE:-${d[15]}}          # 1: also the in-context curve (every snapshot of chain 0)
THINKING=${THINKING:-0}           # 1: thinking switch on (Qwen3)
GAMES=${GAMES:-games}             # game cache, shared by runs
PY=${PY:-python}

mkdir -p "$RUN"
exec > >(tee -a "$RUN/loop.log") 2>&1   # everything printed is also in the run folder
echo "== loop.sh $(date -u +%FT%TZ) | SETTING=$SETTING MODEL=$MODEL RUN=$RUN ROUNDS=$ROUNDS N_EXTRACT=$N_EXTRACT N_DEPLOY=$N_DEPLOY" \
     "N_EVAL=$N_EVAL N_OOD=$N_OOD CHAINS=$CHAINS STEPS=$STEPS BATCH=$BATCH MAX_TURNS=$MAX_TURNS HISTORY=$HISTORY LR=$LR" \
     "MAX_NEW=$MAX_NEW IFEVAL_N=$IFEVAL_N KNOW_TOKENS=$KNOW_TOKENS IFEVAL_NEW=$IFEVAL_NEW CURVE=$CURVE THINKING=$THINKING"

think=(); [ "$THINKING" = 1 ] && think=(--thinking)
play=(--max-turns "$MAX_TURNS" --history "$HISTORY" --max-new-tokens "$MAX_NEW" --games-dir "$GAMES" "${think[@]}")

# stage NAME OUTPUT COMMAND...: run unless OUTPUT exists; log the command and its wall time
stage() {
  local name=$1 out=$2; shift 2
  if [ -e "$out" ]; then echo "-- $name: $out exists, skipped"; return; fi
  echo "-- $name: $*"
  local t0=$SECONDS
  "$@"
  echo "-- $name: done in $((SECONDS - t0)) s"
}

evaluate() {  # evaluate ROUND MODEL: held-out games, OOD games and IFEval, one model load
  local dir=$RUN/round_$1
  stage "eval r$1" "$dir/eval_ifeval.jsonl" $PY evaluate.py --model "$2" --round "$1" --sets id,ood,ifeval --n "$N_EVAL" \
    --n-ood "$N_OOD" --ifeval-n "$IFEVAL_N" --ifeval-max-new-tokens "$IFEVAL_NEW" --out-dir "$dir" "${play[@]}"
}

evaluate 0 "$MODEL"   # the base model: round 0
policy=$MODEL
for r in $(seq 1 "$ROUNDS"); do
  dir=$RUN/round_$r
  mkdir -p "$dir"
  # 1. collect: the current policy plays fresh training games, no knowledge in its context
  stage "collect extract r$r" "$dir/extract.jsonl" $PY collect.py --model "$policy" --preset train --split extract --round "$r" \
    --n "$N_EXTRACT" --seed "$r" --out "$dir/extract.jsonl" "${play[@]}"
  stage "collect deploy r$r" "$dir/deploy.jsonl" $PY collect.py --model "$policy" --preset train --split deploy --round "$r" \
    --n "$N_DEPLOY" --seed "$r" --out "$dir/deploy.jsonl" "${play[@]}"
  # 2. extract: the same policy turns its extraction trajectories into a knowledge pool
  stage "extract r$r" "$dir/knowledge.jsonl" $PY extract.py --model "$policy" --trajectories "$dir/extract.jsonl" --chains "$CHAINS" \
    --max-knowledge-tokens "$KNOW_TOKENS" --round "$r" --seed "$r" --out "$dir/knowledge.jsonl" "${think[@]}"
  # 3. distill: student = policy without knowledge, frozen teacher = policy with knowledge
  stage "distill r$r" "$dir/model" $PY distill.py --model "$policy" --trajectories "$dir/deploy.jsonl" --knowledge "$dir/knowledge.jsonl" \
    --steps "$STEPS" --batch-size "$BATCH" --lr "$LR" --max-new-tokens "$MAX_NEW" --round "$r" --seed "$r" --out "$dir/model" "${think[@]}"
  # 4. evaluate theta_r without knowledge, and the start-of-round policy with the knowledge in context
  evaluate "$r" "$dir/model"
  stage "eval in-context r$r" "$dir/eval_id_incontext.jsonl" $PY evaluate.py --model "$policy" --round "$r" --sets id --n "$N_EVAL" \
    --knowledge "$dir/knowledge.jsonl" --out-dir "$dir" "${play[@]}"
  if [ "$CURVE" = 1 ]; then  # the in-context curve: theta_{r-1} with each snapshot of chain 0
    stage "eval curve r$r" "$dir/eval_id_curve0.jsonl" $PY evaluate.py --model "$policy" --round "$r" --sets id --n "$N_EVAL" \
      --knowledge "$dir/knowledge.jsonl" --knowledge-curve 0 --out-dir "$dir" "${play[@]}"
  fi
  policy=$dir/model
done
$PY evaluate.py --report "$RUN"
echo "== loop.sh done: $RUN/report.md, $RUN/report.png"
