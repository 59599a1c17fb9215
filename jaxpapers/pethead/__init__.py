"""PET head / EH-FT (Yang et al. 2022, arXiv 2210.16771): a parameter-efficient method trained with
a fresh classification head on a frozen pretrained encoder gives the head from which full
fine-tuning starts."""
