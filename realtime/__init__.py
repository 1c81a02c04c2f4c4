"""The server-sent-events relay fed by Redis pub/sub; arrives with issue 3."""
