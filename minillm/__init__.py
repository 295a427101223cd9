"""minillm: a readable Qwen2/Llama decoder for seeing what is inside an LLM."""
