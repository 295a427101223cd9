"""Mistake: score_story returns the NLL as the 0-d tensor cross_entropy gives, not a Python float.

The number is right, and math.exp() of it even works, but the contract says a float: the tensor
travels on into results_table's rows, prints as ``tensor(412.3)``, and breaks ``json.dump`` of the
table (and a pandas column of them is an object column, not numbers).
"""


def score_story(model, tokenizer, text):
    import torch
    import torch.nn.functional as F
    ids = torch.tensor([tokenizer.encode(text)])
    with torch.no_grad():
        logits = model(ids)[0, :-1].float()
    return F.cross_entropy(logits, ids[0, 1:], reduction="sum"), ids.shape[1] - 1
