"""Always greedy: generate ignores the temperature and the seed and takes the argmax every step,
so it never samples."""

def generate(model, prompt_ids, max_new_tokens, temperature=0.0, top_k=None, top_p=None, seed=None):
    return _greedy_only(model, prompt_ids, max_new_tokens)

def _greedy_only(model, prompt_ids, n):
    import torch
    ids = list(prompt_ids)
    for _ in range(n):
        with torch.no_grad():
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt_ids):]
