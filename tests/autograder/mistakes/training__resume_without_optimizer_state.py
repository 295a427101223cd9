"""Mistake: a checkpoint with the weights and the step but not the optimizer's state.

After "resuming", AdamW starts again with zero running averages (exp_avg, exp_avg_sq) and a
step count of 0, so its next updates differ from those of the run that never stopped.
"""


def save_checkpoint(model, optimizer, step, folder):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({name: t.detach().cpu().clone().contiguous() for name, t in model.state_dict().items()},
              str(folder / MODEL_FILE))
    (folder / STATE_FILE).write_text(json.dumps({"step": int(step)}), encoding="utf-8")   # MISTAKE: no optimizer


def load_checkpoint(model, optimizer, folder):
    folder = Path(folder)
    model.load_state_dict(load_file(str(folder / MODEL_FILE)))
    return int(json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))["step"])
