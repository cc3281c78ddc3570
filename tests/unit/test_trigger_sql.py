"""The dual-write triggers' DDL (dialects/triggers.py), rendered without a database."""

from __future__ import annotations

from zdt_backfill.dialects import MariaDBDialect, MySQLDialect, PostgresDialect

COLS = {"email_normalized": "lower(trim(email))", "pct": "id % 7"}  # % doubled for the driver


def test_postgres_installs_one_security_definer_function_and_one_trigger_in_one_transaction():
    d = PostgresDialect()
    fn, create = d.install_up_sql("users_legacy", "users_new", "id", COLS, "app", None, "zdt_up_x")
    # no schema the application could create functions in: every table and type is qualified
    assert "SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $zdt_trigger_body$" in fn
    assert 'DELETE FROM "app"."users_new" WHERE "id" = OLD."id"' in fn  # delete, or a key moved
    assert 'FROM "app"."users_legacy" WHERE "id" = NEW."id" ON CONFLICT ("id") DO UPDATE SET' in fn
    again = d.install_up_sql("users_legacy", "users_new", "id", COLS, "app", None, "zdt_up_x",
                             [("zdt_up_x", "", "", "CREATE TRIGGER ...")])
    assert again[1] == 'DROP TRIGGER IF EXISTS "zdt_up_x" ON "app"."users_legacy"'  # a re-install, one transaction
    assert create.startswith('CREATE TRIGGER "zdt_up_x" AFTER INSERT OR UPDATE OR DELETE ON "app"."users_legacy"')
    assert d.drop_up_sql("users_legacy", "app", "zdt_up_x")[-1] == 'DROP FUNCTION IF EXISTS "app"."zdt_up_x_fn"()'


def test_mysql_keeps_an_identical_trigger_and_follows_the_applications_own():
    for d in (MySQLDialect(), MariaDBDialect()):
        fresh = d.install_up_sql("users_legacy", "users_new", "id", COLS, "app", None, "zdt_up_x")
        assert len(fresh) == 3 and all(s.startswith("CREATE TRIGGER") for s in fresh)  # nothing to drop
        # DELETE, UPDATE, then INSERT: once an insert is mirrored, what follows it is too
        assert [s.split("` ", 1)[1].split(" ON")[0] for s in fresh] == ["AFTER DELETE", "AFTER UPDATE", "AFTER INSERT"]
        bodies = d.up_bodies("users_legacy", "users_new", "id", COLS, "app", None)
        existing = [("zdt_up_x_ins", "INSERT", "AFTER", bodies["INSERT"].replace("%%", "%")),
                    ("audit_upd", "UPDATE", "AFTER", "INSERT INTO audit VALUES (NEW.id)")]
        again = d.install_up_sql("users_legacy", "users_new", "id", COLS, "app", None, "zdt_up_x", existing)
        assert not any("zdt_up_x_ins" in s for s in again)  # kept: a drop and re-create would open a gap
        assert any("zdt_up_x_upd` AFTER UPDATE" in s and "FOLLOWS `audit_upd`" in s for s in again)
        assert d.trigger_names("zdt_up_x") == ["zdt_up_x_ins", "zdt_up_x_upd", "zdt_up_x_del"]


def test_fill_mode_sets_the_new_columns_in_the_row_being_written_before_it_is_written():
    pg = PostgresDialect().install_fill_sql("users", {"email_normalized": "lower(trim(email))"}, "app", None,
                                            "zdt_up_x", ["id", "email", "email_normalized"])
    assert 'SELECT (lower(trim(email))) INTO NEW."email_normalized" FROM (SELECT NEW.*) AS s;' in pg[0]
    assert pg[1].startswith('CREATE TRIGGER "zdt_up_x" BEFORE INSERT OR UPDATE ON "app"."users"')
    my = MySQLDialect().install_fill_sql("users", {"email_normalized": "lower(trim(email))"}, "app", None,
                                         "zdt_up_x", ["id", "email", "email_normalized"])
    assert len(my) == 2 and "BEFORE UPDATE ON `app`.`users`" in my[0] and "BEFORE INSERT" in my[1]
    assert ("SET NEW.`email_normalized` = (SELECT (lower(trim(email))) FROM (SELECT NEW.`id` AS `id`, NEW.`email`"
            " AS `email`, NEW.`email_normalized` AS `email_normalized`) AS s)") in my[1]
    assert MySQLDialect().drop_up_sql("users", "app", "zdt_up_x", fill=True) == [
        "DROP TRIGGER IF EXISTS `app`.`zdt_up_x_ins`", "DROP TRIGGER IF EXISTS `app`.`zdt_up_x_upd`"]


def test_oracle_mysql_upserts_through_a_row_alias_and_mariadb_through_values():
    """VALUES(col) in ON DUPLICATE KEY UPDATE is deprecated since MySQL 8.0.20; MariaDB has no row alias."""
    my, maria = MySQLDialect(), MariaDBDialect()
    repair = my.repair_upsert_sql("users_legacy", "users_new", "id", COLS, 2)
    assert repair == (
        "INSERT INTO `users_new` (`id`, `email_normalized`, `pct`) SELECT * FROM (SELECT `id` AS `id`,"
        " (lower(trim(email))) AS `email_normalized`, (id %% 7) AS `pct` FROM `users_legacy` WHERE `id` IN (%s, %s)"
        " FOR SHARE NOWAIT) AS zdt_row ON DUPLICATE KEY UPDATE `email_normalized` = zdt_row.`email_normalized`,"
        " `pct` = zdt_row.`pct`")
    flag = my.upsert_values_sql("zdt_routing_flags", ["flag", "value"], ["flag"], ["%s", "%s"])
    assert flag.endswith("VALUES (%s, %s) AS zdt_row ON DUPLICATE KEY UPDATE `value` = zdt_row.`value`")
    assert "VALUES(`email_normalized`)" in maria.repair_upsert_sql("users_legacy", "users_new", "id", COLS, 2)
    assert "VALUES(`value`)" in maria.upsert_values_sql("zdt_routing_flags", ["flag", "value"], ["flag"], ["%s", "%s"])
    assert "VALUES(" not in " ".join(my.install_up_sql("s", "t", "id", COLS, "app", None, "zdt_up_x"))
