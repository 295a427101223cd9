"""Mistake: a training step that never clears the gradients.

``loss.backward()`` ADDS to every ``.grad``; without ``optimizer.zero_grad()`` each step
uses the sum of all gradients so far (and whatever was left in ``.grad`` before).
"""


def train_step(model, optimizer, batch, grad_clip=None):
    loss = next_token_loss(model(batch), batch)                 # MISTAKE: no optimizer.zero_grad()
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return loss.item()
