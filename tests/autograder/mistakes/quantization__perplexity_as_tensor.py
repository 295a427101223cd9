"""Mistake: perplexity_vs_bits returns each perplexity as a 0-d tensor (torch.exp of the mean NLL).

The numbers are right, but the contract says (int, float) tuples: a row prints as
``(4, tensor(107.3))``, and plotting or json.dump of the list stumbles on the tensors.
"""


def perplexity_vs_bits(model, tokenizer, texts, bits_list):
    import torch
    results = []
    for bits in bits_list:
        quantized = quantize_model(model, bits)
        total_nll, total_tokens = 0.0, 0
        for text in texts:
            nll, count = text_nll(quantized, tokenizer, text)
            total_nll += nll
            total_tokens += count
        results.append((bits, torch.exp(torch.tensor(total_nll / total_tokens))))
    return results
