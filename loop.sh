#!/usr/bin/env bash
# Online Experiential Learning, end to end: a baseline evaluation, then ROUNDS rounds of collect (extraction and
# deployment games, no knowledge) -> extract (knowledge pool) -> distill (theta_r) -> evaluate (theta_r, and
# theta_{r-1} with the knowledge in context), then the report (table + plot).
#
#   bash loop.sh                     # default: SmolLM2-135M; about 55 min on 2 idle CPU cores, no GPU
#   SETTING=smoke bash loop.sh       # the whole pipeline in minutes: about 5 min on the same 2 idle cores
#   SETTING=paper bash loop.sh       # Qwen3-1.7B with thinking, the paper's sizes; one GPU (docs/performance.md)
#   SETTING=frozenlake bash loop.sh  # the paper's own games and runs: FrozenLake, Qwen3-1.7B; one GPU
#   SETTING=sokoban bash loop.sh     #   Sokoban, Qwen3-4B-Instruct-2507; one GPU (docs/settings.md)
#   SETTING=frozenlake-cpu bash loop.sh  # FrozenLake with the default model on 2 CPU cores
# Any knob below can be set in the environment, e.g. ROUNDS=3 RUN=runs/mine bash loop.sh
# The same command again resumes a stopped run. The run folder's rules: docs/method.md ("The run folder").
set -euo pipefail; cd "$(dirname "$0")"

SETTING=${SETTING:-default}
# A setting is a column of the table below; the paper's own games (TextArena's) add the authors' values on top.
given() {  # given NAME=VALUE...: each NAME takes VALUE unless set in the environment
  local kv name; for kv; do name=${kv%%=*}; [ -n "${!name:-}" ] || printf -v "$name" '%s' "${kv#*=}"; done; }
case "$SETTING" in
  smoke) col=2;; default) col=3;; paper) col=4;;
  frozenlake) col=4  # the paper's FrozenLake run: Qwen3-1.7B, thinking on, one GPU
    given FAMILY=frozenlake GAME_SPLIT=paper THINKING=1 MAX_TURNS=5 HISTORY=0 TOP_P=0.8 TOP_K=20 \
      N_EXTRACT=30 EXTRACT_EPISODES=10 CHAINS=10 USE_STEPS=15 EXTRACT_PROMPT=freetext-v1 KNOW_TOKENS=2048 \
      EXTRACT_NEW=2048 TRAJ_TOKENS=8704 N_DEPLOY=2560 STEPS=20 BATCH=128 LR=5e-6 MAX_NEW=1024 N_EVAL=128;;
  sokoban) col=4  # the paper's Sokoban run: Qwen3-4B-Instruct-2507, thinking off, one GPU
    given FAMILY=sokoban GAME_SPLIT=paper MODEL=Qwen/Qwen3-4B-Instruct-2507 THINKING=0 MAX_TURNS=5 HISTORY=0 \
      TOP_P=0.8 TOP_K=20 N_EXTRACT=100 EXTRACT_EPISODES=10 CHAINS=10 USE_STEPS=50 EXTRACT_PROMPT=structured-v2 \
      KNOW_TOKENS=8192 EXTRACT_NEW=8192 TRAJ_TOKENS=8704 N_DEPLOY=12800 STEPS=100 BATCH=128 LR=1e-6 MAX_NEW=1024 \
      N_EVAL=128;;
  frozenlake-cpu) col=3  # FrozenLake with the default model on a CPU: 48 min on 2 cores (docs/results.md)
    given FAMILY=frozenlake GAME_SPLIT=paper MAX_TURNS=5 HISTORY=0 TOP_P=0.8 TOP_K=20 MAX_NEW=64 N_EVAL=64 N_OOD=16 \
      N_EXTRACT=8 EXTRACT_EPISODES=2 CHAINS=2 N_DEPLOY=16 STEPS=12;;
  *) echo "unknown SETTING=$SETTING (smoke, default, paper, frozenlake, sokoban, frozenlake-cpu)"; exit 2;;
esac
knob() {  # knob NAME SMOKE DEFAULT PAPER STAGE: NAME's value in this setting unless set in the environment
  [ -n "${!1:-}" ] || printf -v "$1" '%s' "${!col}"; affects[$1]=$5; }
declare -A affects  # knob -> the first stage its value feeds (eval: the evaluations only)
#    name        smoke     default   paper     feeds    what it is
knob MODEL       smollm2-135m smollm2-135m Qwen/Qwen3-1.7B all  # hub name, local HF folder, or the built-in default
knob THINKING    0         0         1         all      # 1: the chat template's thinking switch on (Qwen3)
knob FAMILY      textworld textworld textworld all      # the games: textworld, or the paper's frozenlake, sokoban
knob GAME_SPLIT  disjoint  disjoint  disjoint  all      # paper's games: disjoint boards, or paper (the authors' seeds)
knob MAX_NEW     24        24        auto      all      # response cap per turn; paper: 1024 with thinking, else 512
knob MAX_TURNS   3         12        20        all      # turn limit per game (the paper's games: 5)
knob HISTORY     2         4         8         all      # turns of the game log shown in the prompt (0 = all)
knob TOP_P       1.0       1.0       1.0       all      # play and extraction sampling (deployment and the student:
knob TOP_K       0         0         0         all      #   full support); the authors': 0.8 and 20
knob N_EXTRACT   2         8         32        collect  # extraction games per round (fresh seeds each round)
knob EXTRACT_EPISODES 1    1         1         collect  # episodes per extraction game (K: chain c reads episode c)
knob N_DEPLOY    4         16        128       collect  # deployment games per round: their turn prompts train
knob CHAINS      2         4         10        extract  # knowledge chains K (the pool size)
knob USE_STEPS   0         0         0         extract  # the pool: each chain's snapshot after this many (0 = last)
knob EXTRACT_PROMPT structured-v2 structured-v2 structured-v2 extract  # marked items, or freetext-v1
knob KNOW_TOKENS 256       512       2048      extract  # knowledge budget in tokens
knob EXTRACT_NEW 96        96        auto      extract  # extractor output cap; paper: 2048 with thinking, else 96
knob TRAJ_TOKENS 4096     4096      16384     extract  # the extractor sees a trajectory within this (oldest turns go)
knob SOURCE      knowledge knowledge knowledge extract  # knowledge: the policy writes items; raw: the trajectories
knob EXTRACTOR   policy    policy    policy    extract  # the model writing the knowledge (policy: the policy itself)
knob STEPS       2         20        50        distill  # distillation steps per round
knob BATCH       2         8         32        distill  # prompts per distillation step
knob LR          1e-5      1e-5      auto      distill  # constant lr; paper: by size (below). 135M: 5e-5 collapsed it
knob MODE        on-policy on-policy on-policy distill  # on-policy: the student samples; off-policy: the teacher
knob TEACHER     frozen    frozen    frozen    distill  # frozen: theta_{r-1} + knowledge; live: the student + knowledge
knob N_EVAL      3         20        100       eval     # held-out in-distribution games (same every round)
knob N_OOD       2         12        50        eval     # out-of-distribution games (same every round)
knob IFEVAL_N    5         20        541       eval     # instruction-following prompts (OOD); 0 = all
knob IFEVAL_NEW  32        256       1024      eval     # response cap for IFEval answers
knob CURVE       0         0         1         eval     # 1: also the in-context curve (every snapshot of chain 0)
knob ROUNDS      2         2         3         none     # OEL rounds
[ "$MAX_NEW" = auto ] && { [ "$THINKING" = 1 ] && MAX_NEW=1024 || MAX_NEW=512; }
[ "$EXTRACT_NEW" = auto ] && { [ "$THINKING" = 1 ] && EXTRACT_NEW=2048 || EXTRACT_NEW=96; }
[ "$LR" = auto ] && case "$MODEL" in *-4B*|*-8B*) LR=1e-6;; *) LR=5e-6;; esac
RUN=${RUN:-runs/$SETTING}         # everything this run writes goes here
GAMES=${GAMES:-games/$SETTING}    # game cache, shared by the runs of a setting: one per setting, because a held-out
                                  # set that grows (smoke 3 games -> default 20) beside training games checked
                                  # against its smaller self is refused (oel/games.py check_against_training)
PY=${PY:-python} NEW_SETTINGS=${NEW_SETTINGS:-0}  # NEW_SETTINGS=1: go on in RUN with changed knobs, redoing them

# ---------------------------------------------------------------------------- every knob checked before anything runs
# each stage's flags that come from the knobs; the stages' own parsers check them (oel/preflight.py), with the
# model names and ROUNDS, before the lock is taken and settings.json written: a refused start leaves nothing
think=(); [ "$THINKING" = 1 ] && think=(--thinking)
extractor=(); [ "$EXTRACTOR" = policy ] || extractor=(--extractor-model "$EXTRACTOR")
games=(--family "$FAMILY" --game-split "$GAME_SPLIT" --games-dir "$GAMES")
play=(--max-turns "$MAX_TURNS" --history "$HISTORY" --max-new-tokens "$MAX_NEW" "${games[@]}" "${think[@]}")
sampling=(--top-p "$TOP_P" --top-k "$TOP_K")  # play and extraction; deployment games sample at full support
extracting=(--chains "$CHAINS" --max-knowledge-tokens "$KNOW_TOKENS" --max-new-tokens "$EXTRACT_NEW" --source "$SOURCE"
  --max-trajectory-tokens "$TRAJ_TOKENS" --use-steps "$USE_STEPS" --prompt-version "$EXTRACT_PROMPT"
  "${extractor[@]}" "${think[@]}" "${sampling[@]}")
distilling=(--steps "$STEPS" --batch-size "$BATCH" --lr "$LR" --mode "$MODE" --teacher "$TEACHER"
  --max-new-tokens "$MAX_NEW" "${think[@]}")
evaluating=(--n "$N_EVAL" --n-ood "$N_OOD" --ifeval-n "$IFEVAL_N" --ifeval-max-new-tokens "$IFEVAL_NEW" "${play[@]}"
  "${sampling[@]}")
r1=$RUN/round_1
$PY -m oel.preflight --run "$RUN" --rounds "$ROUNDS" --model "$MODEL" --extractor "$EXTRACTOR" --family "$FAMILY" \
  --extraction-games $((N_EXTRACT * EXTRACT_EPISODES)) --switch "THINKING=$THINKING" --switch "CURVE=$CURVE" \
  --switch "NEW_SETTINGS=$NEW_SETTINGS" --knobs "${!affects[*]} SETTING RUN GAMES PY NEW_SETTINGS" \
  -- collect.py "${play[@]}" "${sampling[@]}" --n "$N_EXTRACT" --episodes "$EXTRACT_EPISODES" \
  -- collect.py "${play[@]}" --n "$N_DEPLOY" \
  -- extract.py "${extracting[@]}" --trajectories "$r1/extraction_trajectories.jsonl" --out "$r1/knowledge.jsonl" \
  -- distill.py "${distilling[@]}" --trajectories "$r1/deployment_trajectories.jsonl" \
    --knowledge "$r1/knowledge.jsonl" --out "$r1/model" \
  -- evaluate.py "${evaluating[@]}"

# ---------------------------------------------------------------------------- the run folder: oel/driver.py
# check refuses (RUN a file, a busy lock, changed knobs) writing nothing; start locks descriptor 9, which the stages
# inherit. All printed goes to RUN/loop.log too, by a tee that outlives a Ctrl-C to log the stop, and holds no lock
knobs=(); for k in "${!affects[@]}"; do knobs+=("$k=${!k}:${affects[$k]}"); done  # NAME=VALUE:FEEDS
$PY -m oel.driver check "$RUN" --setting "$SETTING" --new-settings "$NEW_SETTINGS" "${knobs[@]}"
mkdir -p "$RUN"; exec 9<>"$RUN/.lock" > >(trap '' INT TERM HUP; exec tee -a "$RUN/loop.log" 9>&-) 2>&1
$PY -m oel.driver start "$RUN" --setting "$SETTING" --new-settings "$NEW_SETTINGS" "${knobs[@]}" --driver $$
export OEL_RUN_LOCK; OEL_RUN_LOCK=$(realpath "$RUN/.lock"); trap ': > "$OEL_RUN_LOCK"' EXIT  # no holder line left
stage() { $PY -m oel.driver stage "$@" & wait $!; }  # stage NAME OUTPUT COMMAND...; waited on: a trap runs at once
stop() {  # stop SIGNAL STATUS: the running stage's runner stops it (SIGTERM, then SIGKILL after 10 s); then exit
  trap '' INT TERM HUP; local runner; runner=$(jobs -p)
  [ -z "$runner" ] || { kill $runner; wait $runner; } 2>/dev/null || :; echo "-- loop.sh: stopped by $1"; exit "$2"; }
trap 'stop SIGINT 130' INT; trap 'stop SIGTERM 143' TERM; trap 'stop SIGHUP 129' HUP

evaluate() {  # evaluate ROUND MODEL: held-out games, OOD games and IFEval, one model load
  stage "eval r$1" "$RUN/round_$1/eval_ifeval.jsonl" $PY evaluate.py --model "$2" --round "$1" --sets id,ood,ifeval \
    --out-dir "$RUN/round_$1" "${evaluating[@]}"; }
evaluate 0 "$MODEL"; policy=$MODEL  # the base model: round 0, and the policy of round 1
for r in $(seq 1 "$ROUNDS"); do
  dir=$RUN/round_$r; mkdir -p "$dir"
  extraction=$dir/extraction_trajectories.jsonl deployment=$dir/deployment_trajectories.jsonl
  # 1. collect: the current policy plays fresh training games, no knowledge in its context
  stage "collect extract r$r" "$extraction" $PY collect.py --model "$policy" --set extract --round "$r" \
    --n "$N_EXTRACT" --episodes "$EXTRACT_EPISODES" --seed "$r" --out "$extraction" "${play[@]}" "${sampling[@]}"
  stage "collect deploy r$r" "$deployment" $PY collect.py --model "$policy" --set deploy --round "$r" \
    --n "$N_DEPLOY" --seed "$r" --out "$deployment" "${play[@]}"
  # 2. extract: the same policy (or EXTRACTOR) turns its extraction trajectories into a knowledge pool
  stage "extract r$r" "$dir/knowledge.jsonl" $PY extract.py --model "$policy" --trajectories "$extraction" \
    --round "$r" --seed "$r" --out "$dir/knowledge.jsonl" "${extracting[@]}"
  # 3. distill: student = policy without knowledge, teacher = policy with knowledge
  stage "distill r$r" "$dir/model" $PY distill.py --model "$policy" --trajectories "$deployment" \
    --knowledge "$dir/knowledge.jsonl" --round "$r" --seed "$r" --out "$dir/model" "${distilling[@]}"
  # 4. evaluate theta_r without knowledge, and the start-of-round policy with the knowledge in context
  evaluate "$r" "$dir/model"
  stage "eval in-context r$r" "$dir/eval_id_incontext.jsonl" $PY evaluate.py --model "$policy" --round "$r" --sets id \
    --n "$N_EVAL" --knowledge "$dir/knowledge.jsonl" --out-dir "$dir" "${play[@]}" "${sampling[@]}"
  if [ "$CURVE" = 1 ]; then  # the in-context curve: theta_{r-1} with each snapshot of chain 0
    stage "eval curve r$r" "$dir/eval_id_curve0.jsonl" $PY evaluate.py --model "$policy" --round "$r" --sets id \
      --n "$N_EVAL" --knowledge "$dir/knowledge.jsonl" --knowledge-curve 0 --out-dir "$dir" "${play[@]}" \
      "${sampling[@]}"
  fi
  policy=$dir/model
done
stage report "" $PY evaluate.py --report "$RUN"
echo "== loop.sh done: $RUN/report.md, $RUN/report.png"
