from tests.helpers.support import ServiceUnderTest, deliver, envelope, user_data


async def test_created_event_is_applied(service: ServiceUnderTest, db) -> None:
    data = user_data()
    async with service.client() as client:
        response = await deliver(client, envelope(data))
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "applied"}
    row = await db.fetchrow("SELECT * FROM users WHERE id = $1", data["id"])
    assert row["email"] == data["email"]
