"""Layer 1, the simulator: θ prior and topics → generator prompts → headlines (LLM or procedural
generator, strict parsing, bounded retries) → speech → brain map → fixed projection, run as resumable
sharded campaigns. Imports nothing from the other sbi layers."""
