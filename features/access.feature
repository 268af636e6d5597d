Feature: Only keys get in, each at its own pace, and every change is on record
  As the person who puts the store network's API in front of a network
  I want every caller to hold a key whose role decides what it may do, within its own budget,
  and every change written down with the key that asked for it
  So that nobody steps on stock, orders or sagas unseen, and nobody can drown the others

  Scenario: A client key cannot steer a saga; an operator's key can, and the timeline names them
    Given the delivery workers are stopped
    And "store-front" holds a client key
    And the warehouse holds 100 "oat milk"
    And "Riverside" stocks 10 "oat milk" with a reorder level of 5 and a target level of 20
    When a customer orders 6 "oat milk" from "Riverside"
    Then a replenishment of "oat milk" for "Riverside" is started
    When "store-front" asks to compensate the replenishment
    Then "store-front" is refused because its role is client
    When operator "ann" compensates the replenishment because "the van broke down"
    And the delivery workers come back
    Then the replenishment ends compensated
    And its timeline shows "CompensateRequested" by "ann"
    And no stock was created, lost or oversold

  Scenario: A revoked key stops working
    Given "picker-7" holds a client key
    Then "picker-7" can read the stores
    When the admin revokes the key of "picker-7"
    Then "picker-7" is refused as holding no valid key

  Scenario: A flood from one key is slowed to its budget while another key is served
    Given client keys may send 20 requests at once and 10 a second
    And "greedy-app" holds a client key
    And "calm-app" holds a client key
    When "greedy-app" sends 300 requests as fast as it can while "calm-app" sends 15, one at a time
    Then most of "greedy-app"'s requests are refused with 429 and a Retry-After
    And no more of "greedy-app"'s requests succeed than 20 at once and 10 a second allow
    And every request of "calm-app" succeeds

  Scenario: The audit shows who cancelled an order
    Given "Riverside" stocks 20 "oat milk" with a reorder level of 5 and a target level of 30
    And "picker-3" holds a client key
    When "picker-3" places an order of 2 "oat milk" from "Riverside" and cancels it
    Then the audit shows that "picker-3" cancelled that order
