"""What the four stages share, one module each (imports stay explicit: `from oel import lm, play`).

cli             the command line: InputError, run_main, argument types, the model and sampling flags
jsonl           JSON Lines files: read with errors that name the line, tell the stages' files apart, write atomically
inputs          every input a stage reads, checked before a model loads (trajectories, turn prompts, the pool)
lm              loading a model (the built-in default, a folder, a hub name), the chat template, batched sampling
games           the seam between the stages and the game families: sets, episodes, names
textworld_games TextWorld: game sets disjoint by content, one game, its turn prompt and command parsing
arena_games     the paper's FrozenLake and Sokoban (TextArena), played as the authors did; a solver
play            knowledge in the prompt, the policy, the play loop (collect's and evaluate's)
memory          distill's numerics on one GPU: training dtypes, the optimizer, the memory plan
ifeval          IFEval's prompts and Google's checker, offline (evaluate's out-of-distribution axis)
report          the statistics behind the intervals, report.md / report.png, runs side by side
runfolder       the run folder: its lock (one writer), each output's recorded arguments (no torch)
preflight       loop.sh's knobs, checked by the stages' own parsers before anything runs
"""
