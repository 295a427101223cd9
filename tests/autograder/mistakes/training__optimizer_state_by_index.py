"""Mistake: save_checkpoint stores AdamW's state under the optimizer's integer indices ("3/exp_avg")
instead of the parameter names ("layers.0.mlp.up_proj.weight/exp_avg") the docstring asks for.

Resuming the same model in the same order still works, so a resume test alone passes; but the file
means nothing without the optimizer's parameter order, and a model built in another order (or with a
parameter added) silently gets another weight's running averages.
"""


def save_checkpoint(model, optimizer, step, folder):
    import json
    from pathlib import Path
    from safetensors.torch import save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({n: t.detach().cpu().clone().contiguous() for n, t in model.state_dict().items()},
              str(folder / MODEL_FILE))
    state = optimizer.state_dict()
    tensors = {f"{i}/{k}": torch.as_tensor(v).detach().cpu().clone().contiguous()
               for i, entries in state["state"].items() for k, v in entries.items()}
    save_file(tensors, str(folder / OPTIMIZER_FILE))
    groups = [{"params": [str(i) for i in g["params"]],
               "hyperparameters": {k: v for k, v in g.items() if k != "params"}} for g in state["param_groups"]]
    (folder / STATE_FILE).write_text(json.dumps({"step": int(step), "param_groups": groups}), encoding="utf-8")


def load_checkpoint(model, optimizer, folder):
    import json
    from pathlib import Path
    from safetensors.torch import load_file
    folder = Path(folder)
    model.load_state_dict(load_file(str(folder / MODEL_FILE)))
    saved = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    state = {}
    for key, t in load_file(str(folder / OPTIMIZER_FILE)).items():
        index, name = key.split("/", 1)
        state.setdefault(int(index), {})[name] = t
    groups = []
    for g in saved["param_groups"]:
        hyper = dict(g["hyperparameters"])
        if "betas" in hyper:
            hyper["betas"] = tuple(hyper["betas"])
        groups.append({**hyper, "params": [int(i) for i in g["params"]]})
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    return int(saved["step"])
