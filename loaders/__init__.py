"""The programs that bring data into headwater from outside: the Singer target
(`target-headwater`), the Airbyte destination and `headwater import events` (docs/import.md).

They run beside a pipeline (a tap's standard output, a file) and speak to a running headwater over
HTTP, like the host application does; they never import a role. All of them hand records to an
`ImportLoader` (loaders/loader.py), which releases a Singer STATE or an Airbyte state message only
once every record before it is durable.
"""
