"""What the four stages share, one module each (imports stay explicit: `from oel import lm, play`);
no two import each other, and none imports a stage (tests/test_layout.py).

cli             the command line: InputError, run_main (and --check), argument types, the model and sampling flags
jsonl           JSON Lines files: read with errors that name the line, tell the stages' files apart, write atomically
lm              loading a model (the built-in default, a folder, a hub name), the chat template, batched sampling
prefix          a prefix that many sequences share, run once (the teacher's knowledge, a batch's head); OEL_SHARE_PREFIX
experience      the knowledge: where it goes in a prompt (the policy's and the teacher's), reading pools and files
rollouts        collect's trajectories read back by extract and distill: checked, their family, their turn prompts
games           the seam between the stages and the game families: the sets (extract, deploy, id, ood), episodes
textworld_games TextWorld: game sets disjoint by content, one game, its turn prompt and command parsing
arena_games     the paper's FrozenLake and Sokoban (TextArena), played as the authors did; a solver
play            the policy and the play loop over a set of games (collect's and evaluate's)
describe_games  `python -m oel.describe_games`: make a set by hand and describe it (the solver, a random agent)
training        distill's sequence lengths, checked before the model loads; dtypes, the optimizer, the memory plan
ifeval          IFEval's prompts and Google's checker, offline (evaluate's out-of-distribution axis)
stats           the intervals and paired tests (Wilson, cluster bootstrap, sign-flip); a game is the unit
report          report.md / report.png of a run, runs side by side
runfolder       the run folder's rules: one writer (the lock), one set of settings, outputs that remember their
                arguments, what exists is kept
driver          what loop.sh asks of Python: check and start a run, run one stage (and stop it with loop.sh)
preflight       loop.sh's knobs, checked by the stages themselves (`STAGE --check`) before anything runs
"""
