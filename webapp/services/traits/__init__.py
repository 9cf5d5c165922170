"""User traits (issue 29): what services push about their users, the one writer of traits and
their history (store), per-user changes and reads (users), bulk imports from an uploaded file
(imports) and the trait history (history)."""
