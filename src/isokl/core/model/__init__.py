"""The model plumbing: a model and its tokenizer as one `LM` (`models`: loading, the bundled GGUF packages in
`bundled`, fingerprints), what a verb accepts turned into our types (`inputs`), prompts (`prompts`), the one hook
runtime (`hooks`), block outputs read at the last token (`reading`), and the atomic file writes a cache and every
result go through (`files`)."""
