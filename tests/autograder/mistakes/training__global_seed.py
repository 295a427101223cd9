"""Mistake: train seeds torch's GLOBAL generator (torch.manual_seed(seed)) and draws its batches from it.

The run is repeatable and the loss falls, so it looks right; but it resets the caller's random numbers
(every later torch.rand, dropout or shuffle in the program repeats the same sequence), and anything
else drawing from the global generator during training changes which batches are drawn.
"""


def train(model, train_ids, val_ids, steps, batch_size, lr, seed, seq_len=32, eval_every=10, grad_clip=1.0):
    import torch
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    history = {"train_loss": [], "val_step": [0], "val_loss": [evaluate(model, val_ids, seq_len)]}
    for step in range(1, steps + 1):
        starts = torch.randint(len(train_ids) - seq_len + 1, (batch_size,))
        batch = torch.stack([train_ids[s : s + seq_len] for s in starts.tolist()])
        history["train_loss"].append(train_step(model, optimizer, batch, grad_clip))
        if step % eval_every == 0 or step == steps:
            history["val_step"].append(step)
            history["val_loss"].append(evaluate(model, val_ids, seq_len))
    return history
