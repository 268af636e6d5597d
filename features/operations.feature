Feature: Operators see what every replenishment is doing and put stuck ones right
  As the operator responsible for the stores' refills
  I want stuck replenishments and unreadable messages to show up, with the reason,
  and to retry, resolve or replay them, each action on record with my name
  So that no refill is forgotten and every fix can be traced back

  Scenario: A failed replenishment shows up as stuck, and a retry moves it on
    Given the warehouse does not answer
    And the warehouse holds 100 "oat milk"
    And "Riverside" stocks 10 "oat milk" with a reorder level of 5 and a target level of 20
    When a customer orders 6 "oat milk" from "Riverside"
    Then a replenishment of "oat milk" for "Riverside" is started
    And the replenishment ends failed
    And it is listed among the stuck sagas
    When the delivery workers come back
    And operator "ann" retries the replenishment because "the warehouse is back online"
    Then the replenishment ends compensated
    And its timeline shows "RetryRequested" by "ann"
    And it is no longer listed among the stuck sagas
    And a retry by "ann" is refused because the replenishment is compensated
    And the warehouse has 100 "oat milk" left
    And no stock was created, lost or oversold

  Scenario: A failed replenishment is resolved by hand
    Given the warehouse does not answer
    And the warehouse holds 100 "oat milk"
    And "Riverside" stocks 10 "oat milk" with a reorder level of 5 and a target level of 20
    When a customer orders 6 "oat milk" from "Riverside"
    Then a replenishment of "oat milk" for "Riverside" is started
    And the replenishment ends failed
    When operator "bo" resolves the replenishment noting "called the warehouse: nothing was shipped"
    Then the replenishment ends resolved
    And its timeline shows "Resolved" by "bo"
    And it is no longer listed among the stuck sagas
    And no stock was created, lost or oversold

  Scenario: An unreadable message is kept as a dead letter and can be replayed once
    When a malformed command reaches the warehouse
    Then it is kept as a dead letter of "warehouse.commands" saying it is "malformed"
    When an operator replays the dead letter
    Then replaying it again is refused
    And the message was delivered to "warehouse.commands" again and is kept as a new dead letter
    When an operator deletes the dead letter
    Then it is no longer listed among the dead letters
