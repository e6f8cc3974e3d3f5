"""Client-side repository tools: `init` scaffolding from templates, `config generate`, tiny models."""
