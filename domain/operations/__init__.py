"""Operations (the job record of every asynchronous request) and the transactional outbox."""
