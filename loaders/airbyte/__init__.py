"""The Airbyte destination (`destination-headwater`, `headwater import airbyte`): the second front
of the import loader, speaking the Airbyte protocol (docs/import.md, "Airbyte").

`spec` prints the connection specification, `check` tries the control API with a config, and
`write` reads a source's messages on standard input and hands their records to an `ImportLoader`,
echoing each state message only once every record before it is durable. Plain protocol over
msgspec: the Airbyte CDK would downgrade dependencies of ours (pandas, pyrate-limiter).
"""
