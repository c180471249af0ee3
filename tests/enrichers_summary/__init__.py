"""Tests of the summary enricher, its text helpers, the Azure OpenAI summarizer and ROUGE-L."""
