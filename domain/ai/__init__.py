"""Language-model work: the providers every AI call goes through."""
