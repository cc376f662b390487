"""Everything the instances share through etcd: the client, the keyspace, registries and locks."""
