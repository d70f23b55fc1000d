"""Two-tier jobs over the ports (issue 21): intake turns the file into draft candidates
(intake.py); whenever the job has no batch open, the next round is planned and staged as
new batches of the same job (rounds.py), through the same ledger as every paid submit;
the job closes once every line is done, with one completion message."""
