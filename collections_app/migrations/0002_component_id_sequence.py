from django.db import migrations


class Migration(migrations.Migration):
    """Component ids start at 1,000,000 (953 is the reserved id of the hidden variables step)."""

    dependencies = [("collections_app", "0001_initial")]

    operations = [
        migrations.RunSQL(
            "SELECT setval(pg_get_serial_sequence('component', 'id'), 999999, true);",
            reverse_sql=migrations.RunSQL.noop,
        )
    ]
